"""Speed perturbation of padded waveform batches, inside jit (Ko et al., 2015).

Playing an utterance `factor` times faster scales its duration by 1/factor and every frequency
(pitch and formants together) by `factor`: a cheap new voice and speaking rate for a model that
reads the waveform (the wav2vec2 teacher), where VTLP (audio/features.vtlp_warp) warps log-mel
spectra. Kaldi's recipes use the factors 0.9, 1.0 and 1.1 offline with sox; here each utterance
of a training batch draws its own factor in the jitted step, so no copy of the corpus is stored.

Resampling is linear interpolation: output sample n reads the input at n * factor. It is not
band-limited (above 1.0 the top 1 - 1/factor of the band aliases, about 0.7 kHz of 8 kHz at
1.1), which training augmentation tolerates; it is exact for factor 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def speed_perturb(waveform: Array, paddings: Array, factors: Array) -> tuple[Array, Array]:
  """Each row played `factors[b]` times faster, left-aligned in the same buffer.

  Args:
    waveform: [B, S] samples; paddings: [B, S], 1.0 on padding (valid samples first).
    factors: [B] speed factors > 0. A row that would outgrow the buffer (a factor below
      (length - 1) / (S - 1)) is played at that bound instead: see `feasible_factors`.

  Returns:
    (waveform [B, S], paddings [B, S]): row b has floor((length_b - 1) / factor_b) + 1 valid
    samples, output sample n being the input at position n * factor_b, linearly interpolated;
    zeros on padding.
  """
  num_samples = waveform.shape[1]
  lengths = jnp.sum(1.0 - paddings, axis=1)                                   # [B]
  factors = feasible_factors(factors, lengths, num_samples)
  new_lengths = jnp.where(lengths > 0, jnp.floor((lengths - 1.0) / factors) + 1.0, 0.0)
  pos = jnp.arange(num_samples, dtype=jnp.float32)[None, :] * factors[:, None]  # [B, S]
  last = jnp.maximum(lengths - 1.0, 0.0)[:, None]
  pos = jnp.minimum(pos, last)
  i0 = jnp.floor(pos)
  frac = pos - i0
  i0 = i0.astype(jnp.int32)
  i1 = jnp.minimum(i0 + 1, last.astype(jnp.int32))
  x0 = jnp.take_along_axis(waveform, i0, axis=1)
  x1 = jnp.take_along_axis(waveform, i1, axis=1)
  valid = jnp.arange(num_samples)[None, :] < new_lengths[:, None]
  out = jnp.where(valid, x0 + frac * (x1 - x0), 0.0).astype(waveform.dtype)
  return out, (~valid).astype(paddings.dtype)


def feasible_factors(factors: Array, lengths: Array, num_samples: int) -> Array:
  """[B] factors raised where needed so that every slowed-down row still fits S samples."""
  bound = jnp.maximum(lengths - 1.0, 0.0) / max(num_samples - 1, 1)
  return jnp.maximum(jnp.asarray(factors, jnp.float32), bound)


def random_factors(rng: Array, batch: int, min_factor: float, max_factor: float) -> Array:
  """[B] factors drawn uniformly from [min_factor, max_factor]."""
  return jax.random.uniform(rng, (batch,), jnp.float32, min_factor, max_factor)
