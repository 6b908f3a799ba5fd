"""Set-up shared by the launch scripts: logging, and the config flag."""

import logging
import os

from absl import flags
from ml_collections import config_flags


def define_config_flag():
  """--config=configs/x.py[:arg] with --config.a.b=value overrides (locked: typos error)."""
  return config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                         lock_config=True)


def define_checkpoint_flag():
  """--checkpoint: a run folder's checkpoint name (`train/checkpoint.py`), default 'best'."""
  return flags.DEFINE_string("checkpoint", "best", "'best', 'latest', a step, or 'avg:K' "
                             "(mean params of the K latest kept checkpoints).")


def enable_compilation_cache() -> None:
  """Persistent XLA cache: a resumed or repeated run reuses compiled steps.

  Location: $DISTILL_JAX_COMPILATION_CACHE, default ~/.cache/distill_jax/xla ('' disables).
  """
  import jax
  path = os.environ.get("DISTILL_JAX_COMPILATION_CACHE",
                        os.path.expanduser("~/.cache/distill_jax/xla"))
  if path:
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.0)


def setup_logging(workdir: str | None = None) -> None:
  handlers = [logging.StreamHandler()]
  if workdir:
    os.makedirs(workdir, exist_ok=True)
    handlers.append(logging.FileHandler(os.path.join(workdir, "log.txt")))
  logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                      format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  enable_compilation_cache()
  for noisy in ("absl", "orbax", "jax._src"):
    logging.getLogger(noisy).setLevel(logging.WARNING)
