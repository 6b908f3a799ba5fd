"""Set-up shared by the launch scripts: logging, and the config flag."""

import logging
import os

from absl import flags
from ml_collections import config_flags


def define_config_flag():
  """--config=configs/x.py[:arg] with --config.a.b=value overrides (locked: typos error)."""
  return config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                         lock_config=True)


def setup_logging(workdir: str | None = None) -> None:
  handlers = [logging.StreamHandler()]
  if workdir:
    os.makedirs(workdir, exist_ok=True)
    handlers.append(logging.FileHandler(os.path.join(workdir, "log.txt")))
  logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                      format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  for noisy in ("absl", "orbax", "jax._src"):
    logging.getLogger(noisy).setLevel(logging.WARNING)
