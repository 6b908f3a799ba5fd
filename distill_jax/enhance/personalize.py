"""Personalizing a trained denoiser to one listener's situation with LoRA adapters.

A few minutes of the listener's situation (their usual talker, their noise) make mixtures
(`data/mixing.py`, seeded); only low-rank adapters (`distill_jax/adapters/lora.py`) on the
generator's dense and GRU kernels are trained, with the reconstruction loss of training
(multi-resolution STFT - w SI-SDR), and they are saved alone with the base's fingerprint
(`adapters/checkpoint.py`), as for ASR. The adapted generator is `lora.merge_lora(base,
adapters)`: the same network, so latency, streaming and export are unchanged.

`personalize(...)` returns the adapters and the per-step losses.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from distill_jax.adapters import lora
from distill_jax.data import mixing
from distill_jax.enhance import losses
from distill_jax.enhance import model as model_lib

# The bottleneck and both GRUs: where the noise statistics live (4 % of the generator at r = 4).
DEFAULT_PATTERNS = (r"bottleneck_(in|out)/kernel", r"GRUCell_\d+/[ih][rzn]/kernel")


def make_step(model: model_lib.Denoiser, base: Any, tx: optax.GradientTransformation,
              resolutions: Sequence[tuple[int, int, int]], stft_weight: float,
              sisdr_weight: float):
  """(adapters, opt_state, batch {'noisy', 'clean': [B, S]}) -> (adapters, opt_state, metrics);
  jitted; the base params stay frozen."""
  resolutions = tuple(map(tuple, resolutions))

  def loss_fn(adapters, batch):
    est = model_lib.enhance(model, lora.apply_lora(base, adapters), batch["noisy"])
    mr = losses.multi_resolution_stft_loss(est, batch["clean"], resolutions)
    sisdr = jnp.mean(losses.si_sdr(est, batch["clean"]))
    return stft_weight * mr["loss"] - sisdr_weight * sisdr, dict(stft=mr["loss"], sisdr=sisdr)

  @jax.jit
  def step(adapters, opt_state, batch):
    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(adapters, batch)
    updates, opt_state = tx.update(grads, opt_state, adapters)
    return optax.apply_updates(adapters, updates), opt_state, dict(loss=loss, **terms)

  return step


def personalize(model: model_lib.Denoiser, base: Any, cleans: Sequence[np.ndarray],
                noises: Sequence[np.ndarray], *, steps: int, batch_size: int, segment: int,
                seed: int = 0, rank: int = 4, alpha: float = 8.0, lr: float = 1e-3,
                patterns: Sequence[str] = DEFAULT_PATTERNS,
                resolutions: Sequence[tuple[int, int, int]] = ((512, 128, 512),
                                                               (256, 64, 256),
                                                               (128, 32, 128)),
                stft_weight: float = 1.0, sisdr_weight: float = 0.01,
                snr_range: tuple[float, float] = (-5.0, 20.0), level: str = "active",
                progress=None) -> tuple[Any, list[dict[str, float]]]:
  """Trains adapters on mixtures of `cleans` x `noises` (mixture k of batch b is index
  b * batch_size + k of (seed, index)); returns (adapters, [{'step', 'loss', ...}])."""
  if steps < 1 or batch_size < 1:
    raise ValueError(f"personalize: steps={steps}, batch_size={batch_size}: need >= 1")
  if segment % model.frame.hop:
    raise ValueError(f"personalize: segment {segment} is not a multiple of the hop "
                     f"{model.frame.hop}")
  adapters = lora.init_lora(base, patterns, rank, alpha, jax.random.key(seed))
  tx = optax.adam(lr)
  opt_state = tx.init(adapters)
  step = make_step(model, base, tx, resolutions, stft_weight, sisdr_weight)
  log = []
  for s in range(steps):
    batch = mixing.mixture_batch(seed, s * batch_size, batch_size, cleans, noises, segment,
                                 level, snr_range=tuple(snr_range))
    adapters, opt_state, m = step(adapters, opt_state, dict(noisy=jnp.asarray(batch["noisy"]),
                                                            clean=jnp.asarray(batch["clean"])))
    row = {k: float(v) for k, v in m.items()}
    if not np.isfinite(row["loss"]):
      raise FloatingPointError(f"personalize: loss {row['loss']} at step {s + 1}")
    log.append(dict(step=s + 1, **row))
    if progress is not None:
      progress(s + 1, row)
  return adapters, log
