r"""Train a student, alone or distilled from a frozen teacher (`config.distill.teacher`):
  python -m launch.train --config=configs/demo.py --workdir=runs/student
  python -m launch.train --config=configs/demo.py --workdir=runs/kd \
      --config.distill.teacher=teachers/demo [--config.distill.cache=caches/demo]
A workdir with checkpoints resumes from the latest one.
"""

from absl import app, flags

from distill_jax.train import loop, parallel
from launch import common

_CONFIG = common.define_config_flag()
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder (checkpoints, logs).", required=True)


def main(argv):
  del argv
  parallel.initialize_distributed(_CONFIG.value.distributed)
  common.setup_logging(_WORKDIR.value)
  loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
