"""The main job: python -m launch.demo --config=configs/demo.py --workdir=runs/demo"""

from absl import app, flags

from distill_jax.jobs import demo
from launch import common

_CONFIG = common.define_config_flag()
_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Run folder.")


def main(argv):
  del argv
  common.setup_logging(_WORKDIR.value)
  demo.run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
