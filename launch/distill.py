"""Distill a frozen teacher into a student:

  python -m launch.distill --config=configs/demo.py --workdir=runs/kd \\
      --config.distill.teacher=teachers/demo [--config.distill.cache=caches/demo]

The same loop as launch/train.py, with the distillation step (config.distill).
"""

from absl import app, flags

from distill_jax.train import loop, parallel
from launch import common

_CONFIG = common.define_config_flag()
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder (checkpoints, logs).", required=True)


def main(argv):
  del argv
  if not _CONFIG.value.distill.teacher:
    raise app.UsageError("set --config.distill.teacher=FOLDER (a converted teacher)")
  parallel.initialize_distributed(_CONFIG.value.distributed)
  common.setup_logging(_WORKDIR.value)
  loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
