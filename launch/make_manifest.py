"""Manifests (JSONL) from local corpora, Hugging Face / TFDS datasets, or a config's sources.

  # Every config.data.sources entry (and vocab.json for non-English configs):
  python -m launch.make_manifest --config=configs/librispeech_960.py
  python -m launch.make_manifest --config=configs/fleurs_asr.py:de_de

  # One manifest from local folders or lists:
  python -m launch.make_manifest --out=corpora/real_english.jsonl \
      --folder=../shared/data/speech/ljspeech_coqui_tts \
      --folder=../shared/data/speech/librivox_pocketsphinx ...
  python -m launch.make_manifest --out=corpora/ls_test_clean.jsonl \
      --librispeech_dir=/data/LibriSpeech/test-clean
  python -m launch.make_manifest --out=corpora/fleurs_de_test.jsonl \
      --fleurs_dir=/data/fleurs/de_de --split=test
  python -m launch.make_manifest --out=corpora/mine.jsonl --list=my_list.tsv

  # A slice (START:STOP in reading order), e.g. one voice's clips for personalization and the
  # rest for its evaluation:
  python -m launch.make_manifest --out=corpora/lj_adapt.jsonl --range=0:16 \
      --folder=../shared/data/speech/ljspeech_coqui_tts
"""

from absl import app, flags
from ml_collections import config_flags

from distill_jax.data import local, sources
from distill_jax.data.manifest import write_manifest
from launch import common

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config whose data.sources to build.",
                                          lock_config=True)
_NAMES = flags.DEFINE_multi_string("name", None, "With --config: only these sources.")
_FOLDERS = flags.DEFINE_multi_string("folder", None, "Folder with transcripts.tsv + audio.")
_LIBRISPEECH = flags.DEFINE_multi_string("librispeech_dir", None,
                                         "LibriSpeech-layout folder (*/*/*.trans.txt + flac).")
_FLEURS = flags.DEFINE_multi_string("fleurs_dir", None, "FLEURS language folder (<split>.tsv "
                                    "+ audio/<split>/).")
_SPLIT = flags.DEFINE_string("split", "train", "--fleurs_dir split: train | validation | test.")
_LIST = flags.DEFINE_multi_string("list", None, "JSONL or TSV list of path, text[, speaker].")
_OUT = flags.DEFINE_string("out", None, "Output JSONL manifest (without --config).")
_RANGE = flags.DEFINE_string("range", None, "START:STOP: keep these utterances (reading order; "
                             "either side may be empty).")


def main(argv):
  del argv
  common.setup_logging()
  if _CONFIG.value is not None:
    built = sources.build_manifests(_CONFIG.value, names=_NAMES.value)
    for name, utts in built.items():
      hours = sum(u.duration for u in utts) / 3600
      print(f"{_CONFIG.value.data[name]}: {len(utts)} utterances, {hours:.2f} h")
    return
  if not _OUT.value:
    raise app.UsageError("--out is required without --config")
  utts = ([u for f in _FOLDERS.value or () for u in local.read_transcripts_folder(f)] +
          [u for d in _LIBRISPEECH.value or () for u in local.read_librispeech_dir(d)] +
          [u for d in _FLEURS.value or () for u in local.read_fleurs_dir(d, _SPLIT.value)] +
          [u for p in _LIST.value or () for u in local.read_list(p)])
  if not utts:
    raise app.UsageError("nothing to read: pass --folder, --librispeech_dir, --fleurs_dir or "
                         "--list (or --config)")
  if _RANGE.value:
    try:
      start, stop = (int(v) if v else None for v in _RANGE.value.split(":"))
    except ValueError:
      raise app.UsageError(f"--range={_RANGE.value!r}: give START:STOP, e.g. 0:16") from None
    utts = utts[start:stop]
    if not utts:
      raise app.UsageError(f"--range={_RANGE.value} keeps no utterance")
  write_manifest(_OUT.value, utts)
  hours = sum(u.duration for u in utts) / 3600
  print(f"{_OUT.value}: {len(utts)} utterances, {60 * hours:.1f} minutes")


if __name__ == "__main__":
  app.run(main)
