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


def cpu_description() -> str:
  """'2 x AMD EPYC (avx2)': the CPU model and widest x86 vector ISA, for benchmark headers
  (a JAX/PyTorch time ratio depends on them)."""
  model, flags_ = "unknown CPU", set()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == "unknown CPU":
          model = value.strip()
        elif key.strip() == "flags" and not flags_:
          flags_ = set(value.split())
  except OSError:
    pass
  isa = next((i for i in ("avx512f", "avx2", "avx", "sse4_2") if i in flags_), "")
  return f"{os.cpu_count()} x {model}" + (f" ({isa})" if isa else "")


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


def ctc_train_step(config, model, dataset):
  """The config's jitted CTC train step and its initial (device-placed) state, for benchmarks.

  Returns (parallel step object, state, params) with params initialized on `dataset`'s
  shortest batch shape (seed 0).
  """
  from distill_jax.train import loop, parallel, state as state_lib, steps
  params = loop.init_params(model, dataset, 0)
  tx = state_lib.make_optimizer(config.train)
  par = parallel.parallelize(steps.make_ctc_train_step(
      model, tx, state_lib.learning_rate_schedule(config.train),
      grad_accum_steps=config.train.grad_accum_steps), parallel.make_mesh(),
      mode=config.parallel)
  return par, par.put_state(state_lib.create_state(params, tx, 0)), params
