r"""Converts a Hugging Face wav2vec2 CTC checkpoint into the frozen teacher's format.

  python -m launch.convert_teacher --hf=/data/wav2vec2-large-robust-ft-libri-960h \
      --out=teachers/large_robust

Writes `--out`/params (Orbax), config.json, preprocessor_config.json, vocab.json and teacher.json
(source and the sha256 of the source weights). `--hf` may be a hub id when the hub is reachable;
otherwise download the folder first (`huggingface-cli download ID --local-dir DIR`).
"""

import json

from absl import app
from absl import flags

from distill_jax.convert import hf_wav2vec2

FLAGS = flags.FLAGS
flags.DEFINE_string("hf", None, "Hugging Face folder (or hub id) of a Wav2Vec2ForCTC checkpoint.")
flags.DEFINE_string("out", None, "Output folder for the converted teacher (must not hold params/).")
flags.mark_flags_as_required(["hf", "out"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  meta = hf_wav2vec2.convert(FLAGS.hf, FLAGS.out)
  print(json.dumps(meta, indent=2, sort_keys=True))


if __name__ == "__main__":
  app.run(main)
