r"""Whisper's transcripts of a manifest as pseudo-labels (sequence-level KD, distil-whisper's way):

  python -m launch.whisper_transcribe --whisper=teachers/whisper-tiny.en-hf \
      --manifest=datasets/x/train.jsonl --out=datasets/x/train_whisper.jsonl [--max_wer=0.1]

Writes OUT (a manifest whose text is Whisper's normalized transcript, the original text kept in
`reference`), OUT.report.json (every dropped utterance by id: WER above --max_wer against its
reference, empty transcript, too long, unreadable) and OUT.partial (decoded so far: a killed run
resumes from it). Train on OUT (--config.data.train=OUT, and with a teacher
--config.distill.hard_labels=whisper). distill_jax/jobs/whisper_transcribe.py has the details.
"""

import json

from absl import app, flags

from distill_jax.jobs import whisper_transcribe
from launch import common

_WHISPER = flags.DEFINE_string("whisper", None, "Whisper transformers folder.", required=True)
_MANIFEST = flags.DEFINE_string("manifest", None, "Input manifest (JSONL).", required=True)
_OUT = flags.DEFINE_string("out", None, "Output pseudo-labelled manifest.", required=True)
_MAX_WER = flags.DEFINE_float("max_wer", 0.1, "Drop utterances whose WER against their "
                              "reference exceeds this; < 0 keeps every one.")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Utterances per decoding batch.")
_BEAM = flags.DEFINE_integer("beam_size", 1, "1 = greedy search, K > 1 = beam search.")
_LANGUAGE = flags.DEFINE_string("language", None, "Language of a multilingual model (en).")
_WINDOW = flags.DEFINE_float("window_seconds", 0.0, "Decoding window; 0 = the model's (30 s).")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", None, "Most tokens per utterance.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Start over when OUT.partial was made with "
                               "other settings.")


def main(argv):
  del argv
  common.setup_logging()
  common.enable_compilation_cache()
  report = whisper_transcribe.transcribe_manifest(
      _WHISPER.value, _MANIFEST.value, _OUT.value,
      max_wer=None if _MAX_WER.value < 0 else _MAX_WER.value, batch_size=_BATCH.value,
      beam_size=_BEAM.value, language=_LANGUAGE.value, window_seconds=_WINDOW.value,
      max_new_tokens=_MAX_NEW.value, overwrite=_OVERWRITE.value)
  print(json.dumps({k: v for k, v in report.items() if k != "dropped"}, indent=2))


if __name__ == "__main__":
  app.run(main)
