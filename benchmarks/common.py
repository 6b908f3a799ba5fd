"""Helpers shared by the benchmarks: the machine's description, peak memory, timing, a step.

Benchmarks print figures beside a reference measured in the same run (ratios), never pass or
fail; run them on an otherwise idle machine (see docs/speed.md).
"""

import os
import statistics
import time
from typing import Callable



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


def status_kb(field: str) -> int:
  """A field of /proc/self/status in KiB (VmHWM: peak RSS, VmRSS: current RSS)."""
  with open("/proc/self/status", encoding="utf-8") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1])
  raise KeyError(f"/proc/self/status has no {field}")


def reset_peak_rss() -> bool:
  """Resets VmHWM to the current RSS (Linux >= 4.0); False where the kernel refuses."""
  try:
    with open("/proc/self/clear_refs", "w", encoding="utf-8") as f:
      f.write("5")
    return True
  except OSError:
    return False


def median_seconds(fn: Callable[[], object], runs: int) -> tuple[float, float]:
  """(median, min) wall seconds of `runs` calls of fn (which must block until done)."""
  times = []
  for _ in range(runs):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times), min(times)


def train_step(config, model, dataset):
  """The config's jitted CTC train step and its initial (device-placed) state, for benchmarks.

  Returns (parallel step object, state, params) with params initialized on `dataset`'s
  shortest batch shape (seed 0).
  """
  # JAX is imported here, not at the top: some benchmarks set XLA flags before it loads.
  from distill_jax.train import parallel  # pylint: disable=import-outside-toplevel
  from distill_jax.train import state as state_lib  # pylint: disable=import-outside-toplevel
  from distill_jax.train import steps  # pylint: disable=import-outside-toplevel
  params = state_lib.init_params(model, dataset.batch_shapes(), 0)
  tx = state_lib.make_optimizer(config.train)
  par = parallel.parallelize(steps.make_train_step(
      model, tx, state_lib.learning_rate_schedule(config.train),
      grad_accum_steps=config.train.grad_accum_steps), parallel.make_mesh(),
      mode=config.parallel)
  return par, par.put_state(state_lib.create_state(params, tx, 0)), params
