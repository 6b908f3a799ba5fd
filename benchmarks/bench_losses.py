r"""Benchmark of the RNN-T loss + gradient on CPU: time and memory against references.

Rows, for each shape (B, T, U, V):
  jax fused (beta)      distill_jax.losses.transducer.rnnt_loss, custom VJP (the default)
  jax fused (autodiff)  the same forward, gradient by differentiating through the alpha scan
  jax naive             full log_softmax over V materialized, then gather + autodiff scan
  torchaudio            torchaudio.functional.rnnt_loss (only when importable)

Reported: median (and min) wall time of loss + gradient (jitted, after warm-up), XLA's temp
buffer size from `jit(f).lower(...).compile().memory_analysis()` (JAX rows; the gradient output
and the inputs are not temps), and the peak process RSS above the level before the first
call, sampled during the warm-up and timed runs; each row runs in its own process (--isolate)
so rows do not share allocator state. Ratios are against torchaudio when it is installed,
otherwise against the naive JAX row (same inputs, same machine, same run).

  nice -n 19 python -m benchmarks.bench_losses
  nice -n 19 python -m benchmarks.bench_losses --shapes=8x200x40x128 --iters=3
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import statistics
import threading
import time
from typing import Callable, Sequence

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from distill_jax.losses import transducer

try:
  import psutil  # pylint: disable=g-import-not-at-top
except ImportError:  # optional: RSS is read from /proc instead
  psutil = None

FLAGS = flags.FLAGS
flags.DEFINE_list("shapes", ["8x200x40x128", "4x400x80x1024"], "BxTxUxV shapes to measure.")
flags.DEFINE_integer("iters", 5, "Timed iterations per row (after one warm-up call).")
flags.DEFINE_integer("seed", 0, "Seed of the random logits and labels.")
flags.DEFINE_bool("isolate", True, "Run each row in its own process (clean RSS figures).")


@dataclasses.dataclass
class Row:
  name: str
  shape: str
  median_ms: float
  min_ms: float
  temp_mb: float | None
  rss_mb: float
  loss_sum: float


def _rss_bytes() -> int:
  """Resident set size of this process (psutil when installed, else /proc on Linux)."""
  if psutil is not None:
    return psutil.Process().memory_info().rss
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _RssPeak:
  """Samples this process's RSS in a thread; `peak_mb` is the max above the start level."""

  def __init__(self, interval_s: float = 0.005):
    self._interval = interval_s
    self._stop = threading.Event()
    self._base = self._peak = _rss_bytes()
    self._thread = threading.Thread(target=self._run, daemon=True)

  def _run(self):
    while not self._stop.is_set():
      self._peak = max(self._peak, _rss_bytes())
      time.sleep(self._interval)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()

  @property
  def peak_mb(self) -> float:
    return (self._peak - self._base) / 2**20


def make_inputs(bsz: int, t: int, u: int, v: int, seed: int):
  """Random logits [B, T, U+1, V] and ragged lengths (90-100% of T and U)."""
  rng = np.random.default_rng(seed)
  logits = rng.standard_normal((bsz, t, u + 1, v), dtype=np.float32)
  labels = rng.integers(1, v, size=(bsz, u)).astype(np.int32)
  t_lens = rng.integers(int(0.9 * t), t + 1, size=bsz)
  u_lens = rng.integers(int(0.9 * u), u + 1, size=bsz)
  t_lens[0], u_lens[0] = t, u
  paddings = (np.arange(t)[None] >= t_lens[:, None]).astype(np.float32)
  label_paddings = (np.arange(u)[None] >= u_lens[:, None]).astype(np.float32)
  return logits, paddings, labels, label_paddings


def naive_rnnt_loss(logits, paddings, labels, label_paddings, blank_id: int = 0):
  """Reference JAX RNN-T loss that materializes log_softmax over V ([B, T, U+1, V])."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  blank = log_probs[..., blank_id]
  idx = labels.astype(jnp.int32)[:, None, :, None]
  idx = jnp.broadcast_to(idx, log_probs.shape[:2] + idx.shape[2:])
  target = jnp.take_along_axis(log_probs[:, :, :-1], idx, axis=-1)[..., 0]
  t_lens = jnp.sum(1 - paddings, 1).astype(jnp.int32)
  u_lens = jnp.sum(1 - label_paddings, 1).astype(jnp.int32)
  return -transducer.rnnt_lattice_log_likelihood(blank, target, t_lens, u_lens,
                                                 gradient="autodiff")


def _time(fn: Callable[[], float], iters: int) -> tuple[float, float, float, float]:
  """(median ms, min ms, peak RSS MB above the level at entry, last loss sum).

  The RSS sampler covers the warm-up call too, so the figure includes the buffers (gradient,
  temporaries) the first call allocates and the allocator then keeps.
  """
  with _RssPeak() as rss:
    loss_sum = fn()
    times = []
    for _ in range(iters):
      start = time.perf_counter()
      loss_sum = fn()
      times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times), 1e3 * min(times), rss.peak_mb, loss_sum


def _fused_beta(*args):
  return transducer.rnnt_loss(*args, gradient="beta")


def _fused_autodiff(*args):
  return transducer.rnnt_loss(*args, gradient="autodiff")


JAX_IMPLS = {
    "jax fused (beta)": _fused_beta,
    "jax fused (autodiff)": _fused_autodiff,
    "jax naive": naive_rnnt_loss,
}


def bench_jax(name: str, inputs, shape: str, iters: int) -> Row:
  loss_fn = JAX_IMPLS[name]
  fn = jax.jit(jax.value_and_grad(lambda x, *a: loss_fn(x, *a).sum()))
  args = [jnp.asarray(a) for a in inputs]
  compiled = fn.lower(*args).compile()
  mem = compiled.memory_analysis()
  temp_mb = mem.temp_size_in_bytes / 2**20 if mem is not None else None

  def call():
    loss, grad = compiled(*args)
    grad.block_until_ready()
    return float(loss)

  median_ms, min_ms, rss_mb, loss_sum = _time(call, iters)
  return Row(name, shape, median_ms, min_ms, temp_mb, rss_mb, loss_sum)


def torchaudio_available() -> bool:
  try:
    import torch  # pylint: disable=g-import-not-at-top,unused-import  # noqa: F401
    import torchaudio  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  return hasattr(torchaudio.functional, "rnnt_loss")


def bench_torchaudio(inputs, shape: str, iters: int) -> Row:
  import torch  # pylint: disable=g-import-not-at-top
  import torchaudio  # pylint: disable=g-import-not-at-top
  logits, paddings, labels, label_paddings = inputs
  x = torch.tensor(logits)
  targets = torch.tensor(labels, dtype=torch.int32)
  t_lens = torch.tensor((1 - paddings).sum(1), dtype=torch.int32)
  u_lens = torch.tensor((1 - label_paddings).sum(1), dtype=torch.int32)

  def call():
    xg = x.detach().requires_grad_(True)
    loss = torchaudio.functional.rnnt_loss(xg, targets, t_lens, u_lens, blank=0,
                                           reduction="none")
    loss.sum().backward()
    return float(loss.sum())

  median_ms, min_ms, rss_mb, loss_sum = _time(call, iters)
  return Row("torchaudio", shape, median_ms, min_ms, None, rss_mb, loss_sum)


def bench_one(name: str, shape: str, iters: int, seed: int) -> Row:
  bsz, t, u, v = (int(s) for s in shape.lower().split("x"))
  inputs = make_inputs(bsz, t, u, v, seed)
  if name == "torchaudio":
    return bench_torchaudio(inputs, shape, iters)
  return bench_jax(name, inputs, shape, iters)


def _child(name: str, shape: str, iters: int, seed: int, queue) -> None:
  queue.put(bench_one(name, shape, iters, seed))


def bench_isolated(name: str, shape: str, iters: int, seed: int) -> Row:
  """Runs one row in a fresh process so its RSS is not shared with the other rows."""
  ctx = multiprocessing.get_context("spawn")
  queue = ctx.Queue()
  proc = ctx.Process(target=_child, args=(name, shape, iters, seed, queue))
  proc.start()
  row = queue.get()
  proc.join()
  return row


def run(shapes: Sequence[str], iters: int, seed: int, isolate: bool = True) -> list[Row]:
  """Measures every row for every shape and prints the table."""
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs; "
        f"median of {iters} runs after warm-up; "
        f"{'one process per row' if isolate else 'all rows in one process'}")
  names = list(JAX_IMPLS)
  if torchaudio_available():
    names.append("torchaudio")
  else:
    print("torchaudio not installed: reference not measured")
  ref_name = names[-1]  # torchaudio when present, else the naive JAX version
  bench = bench_isolated if isolate else bench_one
  rows: list[Row] = []
  for shape in shapes:
    bsz, t, u, v = (int(s) for s in shape.lower().split("x"))
    print(f"\n{shape} (BxTxUxV): logits {4 * bsz * t * (u + 1) * v / 2**20:.0f} MB")
    group = [bench(name, shape, iters, seed) for name in names]
    ref = group[-1]
    print(f"{'impl':<22}{'median ms':>11}{'x ref':>8}{'min ms':>9}"
          f"{'XLA temp MB':>13}{'x ref':>8}"
          f"{'peak RSS +MB':>14}{'x ref':>8}{'loss sum':>16}   (ref: {ref_name})")
    for r in group:
      temp = f"{r.temp_mb:13.1f}" if r.temp_mb is not None else f"{'-':>13}"
      temp_ratio = (f"{r.temp_mb / ref.temp_mb:8.2f}"
                    if r.temp_mb is not None and ref.temp_mb else f"{'-':>8}")
      print(f"{r.name:<22}{r.median_ms:11.1f}{r.median_ms / ref.median_ms:8.2f}"
            f"{r.min_ms:9.1f}{temp}"
            f"{temp_ratio}{r.rss_mb:14.1f}{r.rss_mb / max(ref.rss_mb, 1e-9):8.2f}"
            f"{r.loss_sum:16.4f}")
    rows.extend(group)
  return rows


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  run(FLAGS.shapes, FLAGS.iters, FLAGS.seed, FLAGS.isolate)


if __name__ == "__main__":
  app.run(main)
