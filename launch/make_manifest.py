"""Manifests (JSONL) from local corpora, Hugging Face / TFDS datasets, or a config's sources.

  # Every config.data.sources entry (and vocab.json for non-English configs):
  python -m launch.make_manifest --config=configs/librispeech_960.py
  python -m launch.make_manifest --config=configs/fleurs_asr.py:de_de

  # One manifest from local folders or lists:
  python -m launch.make_manifest --out=corpora/real_english.jsonl \
      --folder=data/real_english/ljspeech_coqui_tts \
      --folder=data/real_english/librivox_pocketsphinx ...
  python -m launch.make_manifest --out=corpora/ls_test_clean.jsonl \
      --librispeech_dir=/data/LibriSpeech/test-clean
  python -m launch.make_manifest --out=corpora/fleurs_de_test.jsonl \
      --fleurs_dir=/data/fleurs/de_de --split=test
  python -m launch.make_manifest --out=corpora/mine.jsonl --list=my_list.tsv
  # A Kaldi / ESPnet data directory (wav.scp, text, utt2spk[, segments, spk2gender]); recipe
  # paths are relative to the recipe folder, hence --kaldi_root. Segments are cut to files
  # under --kaldi_segments_dir (default: beside --out).
  python -m launch.make_manifest --out=corpora/yesno_train.jsonl \
      --kaldi=kaldi/egs/yesno/s5/data/train_yesno --kaldi_root=kaldi/egs/yesno/s5

  # Merged manifests (ids must not repeat), and held-out speakers (here 10 of speechocean762's
  # test speakers as a dev set, drawn with seed 0; the other 115 stay the test set):
  python -m launch.make_manifest --out=datasets/whisper_head/train.jsonl \
      --manifest=datasets/speechocean762/train.jsonl --manifest=corpora/demo/train.jsonl
  python -m launch.make_manifest --manifest=datasets/speechocean762/test_all.jsonl \
      --hold_out_speakers=10:0 --held_out=datasets/speechocean762/dev.jsonl \
      --out=datasets/speechocean762/test.jsonl

  # A slice (START:STOP in reading order), e.g. one voice's clips for personalization and the
  # rest for its evaluation:
  python -m launch.make_manifest --out=corpora/lj_adapt.jsonl --range=0:16 \
      --folder=data/real_english/ljspeech_coqui_tts

Skipped utterances (a Kaldi utterance without transcript, audio or speaker) are counted on the
terminal and listed in `<out>.skipped.json`. A TSV --list may name its columns in a header line
(`path<TAB>text<TAB>speaker<TAB>id<TAB>...`; unknown names are ignored with a logged note);
without one, columns after the third are ignored with a logged note.
"""

import collections
import os

from absl import app, flags
from ml_collections import config_flags

from distill_jax.data import lists, local, sources
from distill_jax.data.manifest import hold_out_speakers, read_manifest, write_manifest
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
_LIST = flags.DEFINE_multi_string("list", None, "JSONL or TSV list of path, text[, speaker] "
                                  "(a TSV header line may name the columns).")
_KALDI = flags.DEFINE_multi_string("kaldi", None, "Kaldi data directory (wav.scp, text, utt2spk"
                                   "[, segments, spk2gender]).")
_KALDI_ROOT = flags.DEFINE_string("kaldi_root", None, "Folder relative wav.scp paths resolve "
                                  "against (default: each --kaldi directory's parent).")
_KALDI_UNLABELLED = flags.DEFINE_bool("kaldi_unlabelled", False, "Keep --kaldi utterances "
                                      "without a transcript (text \"\"; `text` may be absent).")
_KALDI_SEGMENTS_DIR = flags.DEFINE_string("kaldi_segments_dir", None, "Where --kaldi segments "
                                          "are cut to files (default: <out>.segments/).")
_MANIFESTS = flags.DEFINE_multi_string("manifest", None, "A JSONL manifest to merge in.")
_HOLD_OUT = flags.DEFINE_string("hold_out_speakers", None, "N:SEED: every utterance of N "
                                "speakers drawn with SEED goes to --held_out instead of --out.")
_HELD_OUT = flags.DEFINE_string("held_out", None, "Manifest of the --hold_out_speakers.")
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
          [u for p in _LIST.value or () for u in lists.read_list(p)] +
          [u for p in _MANIFESTS.value or () for u in read_manifest(p)])
  reports = []
  segments_dir = _KALDI_SEGMENTS_DIR.value or os.path.splitext(_OUT.value)[0] + ".segments"
  for d in _KALDI.value or ():
    u, rep = sources.read_kaldi(d, segments_dir, root=_KALDI_ROOT.value or "",
                                require_text=not _KALDI_UNLABELLED.value)
    utts += u
    reports.append(rep)
  if not utts:
    raise app.UsageError("nothing to read: pass --folder, --librispeech_dir, --fleurs_dir, "
                         "--list, --kaldi or --manifest (or --config)")
  if _RANGE.value:
    try:
      start, stop = (int(v) if v else None for v in _RANGE.value.split(":"))
    except ValueError:
      raise app.UsageError(f"--range={_RANGE.value!r}: give START:STOP, e.g. 0:16") from None
    utts = utts[start:stop]
    if not utts:
      raise app.UsageError(f"--range={_RANGE.value} keeps no utterance")
  duplicates = sorted(k for k, n in collections.Counter(u.id for u in utts).items() if n > 1)
  if duplicates:
    raise app.UsageError(f"{len(duplicates)} utterance ids repeat across the inputs, e.g. "
                         f"{duplicates[:5]}")
  if _HOLD_OUT.value:
    if not _HELD_OUT.value:
      raise app.UsageError("--hold_out_speakers needs --held_out (its manifest)")
    try:
      num, seed = (int(v) for v in _HOLD_OUT.value.split(":"))
    except ValueError:
      raise app.UsageError(f"--hold_out_speakers={_HOLD_OUT.value!r}: give N:SEED") from None
    held, utts = hold_out_speakers(utts, num, seed)
    write_manifest(_HELD_OUT.value, held)
    print(f"{_HELD_OUT.value}: {len(held)} utterances of {num} held-out speakers")
  write_manifest(_OUT.value, utts)
  hours = sum(u.duration for u in utts) / 3600
  print(f"{_OUT.value}: {len(utts)} utterances, {60 * hours:.1f} minutes"
        f"{sources.write_skip_list(_OUT.value, reports)}")


if __name__ == "__main__":
  app.run(main)
