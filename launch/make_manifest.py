"""Manifest over folders of audio + transcripts.tsv, e.g. the real English clips:

  python -m launch.make_manifest --out=corpora/real_english.jsonl \
      --folder=../shared/data/speech/ljspeech_coqui_tts \
      --folder=../shared/data/speech/librivox_pocketsphinx ...
"""

from absl import app, flags

from distill_jax.data import local

_FOLDERS = flags.DEFINE_multi_string("folder", None, "Folder with transcripts.tsv + audio.",
                                     required=True)
_OUT = flags.DEFINE_string("out", None, "Output JSONL manifest.", required=True)


def main(argv):
  del argv
  utts = local.manifest_from_folders(_FOLDERS.value, _OUT.value)
  hours = sum(u.duration for u in utts) / 3600
  print(f"{_OUT.value}: {len(utts)} utterances, {60 * hours:.1f} minutes")


if __name__ == "__main__":
  app.run(main)
