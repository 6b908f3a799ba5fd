r"""Export a wav2vec2 model trained by the loop as a Hugging Face folder:

  python -m launch.export_teacher --workdir=runs/teacher --checkpoint=best --out=teachers/demo_hf

Writes config.json, model.safetensors, vocab.json, tokenizer and preprocessor configs (what
`transformers.Wav2Vec2ForCTC.from_pretrained` and `Wav2Vec2Processor.from_pretrained` read) and
exported_from.json. The folder is then a teacher like any hub checkpoint:
`python -m launch.convert_teacher --hf=teachers/demo_hf --out=teachers/demo`.

A Whisper CTC-head run (configs/whisper_head.py) exports to a Whisper teacher folder instead
(`convert/whisper_ctc_folder.py`); `--float16` stores its weights in half precision.
"""

import json

from absl import app, flags

from distill_jax.train import export
from launch import common

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder of the trained model.", required=True)
_CHECKPOINT = common.define_checkpoint_flag()
_OUT = flags.DEFINE_string("out", None, "Output Hugging Face folder.", required=True)
_FLOAT16 = flags.DEFINE_bool("float16", False, "Whisper CTC head: store its weights in float16 "
                             "(half the size, read back as float32).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  common.setup_logging()
  kwargs = dict(weights_dtype="float16") if _FLOAT16.value else {}
  meta = export.export_checkpoint(_WORKDIR.value, _CHECKPOINT.value, _OUT.value, **kwargs)
  print(json.dumps(meta, indent=2, sort_keys=True))


if __name__ == "__main__":
  app.run(main)
