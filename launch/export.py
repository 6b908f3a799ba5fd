r"""Export a trained CTC student to the on-device folder (ONNX float + int8, metadata inside):

  python -m launch.export --workdir=runs/demo_student --checkpoint=best --out=exports/student
  python -m launch.transcribe exports/student clip.mp3 --int8

Writes model.onnx, model.int8.onnx, tokens.txt, vocab.json and export.json
(`distill_jax/ondevice/contract.py`); the export fails unless the ONNX logits equal the JAX
student's within 1e-4 on a test signal (or on --check_audio). Prints export.json's parity and
file sizes.
"""

import json

from absl import app, flags

from distill_jax.export import folder
from distill_jax.ondevice import audio as audio_lib
from distill_jax.train import runs
from launch import common

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder of a trained CTC student.",
                               required=True)
_CHECKPOINT = common.define_checkpoint_flag()
_OUT = flags.DEFINE_string("out", None, "Output folder.", required=True)
_INT8 = flags.DEFINE_bool("int8", True, "Also write model.int8.onnx (per-channel int8 MatMul "
                          "weights).")
_CHECK_AUDIO = flags.DEFINE_string("check_audio", None, "Audio file for the parity check "
                                   "(default: a synthetic test signal).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  common.setup_logging()
  model, params, tokenizer, step = runs.restore_student(_WORKDIR.value, _CHECKPOINT.value)
  wav = (audio_lib.load_audio(_CHECK_AUDIO.value, model.frontend.sample_rate)
         if _CHECK_AUDIO.value else None)
  meta = folder.export_folder(
      model, params, tokenizer, _OUT.value, int8=_INT8.value, check_waveform=wav,
      source=dict(workdir=_WORKDIR.value, checkpoint=str(_CHECKPOINT.value), step=int(step)))
  print(json.dumps(dict(out=_OUT.value, parity=meta["parity"], file_bytes=meta["file_bytes"]),
                   indent=1))


if __name__ == "__main__":
  app.run(main)
