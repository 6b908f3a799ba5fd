"""CTC, attention and transducer students with and without KD, in one table:

  python -m launch.compare_families --config=configs/families.py --workdir=runs/families

See distill_jax/jobs/families.py.
"""

from absl import app, flags

from distill_jax.jobs import families
from launch import common

_CONFIG = common.define_config_flag()
_WORKDIR = flags.DEFINE_string("workdir", "runs/families", "Run folder.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  common.setup_logging(_WORKDIR.value)
  families.run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
