r"""Train the causal hearing-aid denoiser (issue 27) on seeded speech + noise mixtures:
  python -m launch.train_enhance --config=configs/enhance.py:recon --workdir=runs/enh_recon \
      --config.data.noise_train=noise/train.txt --config.data.noise_dev=noise/dev.txt
  python -m launch.train_enhance --config=configs/enhance.py:gan --workdir=runs/enh_gan ...
A workdir with checkpoints resumes from the latest one.
"""

from absl import app, flags

from distill_jax.enhance import loop
from launch import common

_CONFIG = common.define_config_flag()
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder (checkpoints, logs).", required=True)


def main(argv):
  del argv
  common.setup_logging(_WORKDIR.value)
  loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
