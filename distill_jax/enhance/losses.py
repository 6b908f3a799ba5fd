"""Losses of the denoiser: reconstruction (multi-resolution STFT, SI-SDR) and adversarial
(least-squares GAN with feature matching, HiFi-GAN family; metric discriminator, MetricGAN).

Waveforms are fixed-length crops [B, S] (no padding); every loss is a float32 scalar, the mean
over the batch. Discriminator outputs are lists over sub-discriminators of (logits, features)
as returned by `enhance.discriminators`.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# (fft size, hop, window) triples, as in Parallel WaveGAN / auraloss defaults scaled to 16 kHz.
DEFAULT_RESOLUTIONS = ((512, 128, 512), (256, 64, 256), (128, 32, 128))


def stft_magnitude(x: Array, fft: int, hop: int, win: int) -> Array:
  """|STFT| with a periodic Hann window, frames fully inside the signal. x: [B, S] ->
  [B, (S - win) // hop + 1, fft // 2 + 1]."""
  if x.shape[-1] < win:
    raise ValueError(f"stft_magnitude: {x.shape[-1]} samples < window {win}")
  num = (x.shape[-1] - win) // hop + 1
  idx = np.arange(num)[:, None] * hop + np.arange(win)[None, :]
  w = jnp.asarray(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win), jnp.float32)
  spec = jnp.fft.rfft(x[..., idx] * w, n=fft, axis=-1)
  return jnp.sqrt(jnp.maximum(spec.real ** 2 + spec.imag ** 2, 1e-9))


def multi_resolution_stft_loss(est: Array, ref: Array,
                               resolutions: Sequence[tuple[int, int, int]] = DEFAULT_RESOLUTIONS
                               ) -> dict[str, Array]:
  """Spectral convergence + log-magnitude L1, averaged over resolutions (Yamamoto et al. 2020).

  est, ref: [B, S]. Returns {'loss', 'sc', 'mag'} scalars (loss = sc + mag).
  """
  sc, mag = 0.0, 0.0
  for fft, hop, win in resolutions:
    e, r = stft_magnitude(est, fft, hop, win), stft_magnitude(ref, fft, hop, win)
    sc += jnp.mean(jnp.sqrt(jnp.sum((r - e) ** 2, axis=(1, 2)))
                   / jnp.sqrt(jnp.sum(r ** 2, axis=(1, 2)) + 1e-9))
    mag += jnp.mean(jnp.abs(jnp.log(r) - jnp.log(e)))
  n = len(resolutions)
  return dict(loss=(sc + mag) / n, sc=sc / n, mag=mag / n)


def si_sdr(est: Array, ref: Array, eps: float = 1e-8) -> Array:
  """Scale-invariant SDR in dB (Le Roux et al. 2019), both signals made zero-mean.

  est, ref: [B, S] -> [B]: 10 log10(|a r|^2 / |a r - e|^2), a = <e, r> / |r|^2.
  """
  est = est - jnp.mean(est, axis=-1, keepdims=True)
  ref = ref - jnp.mean(ref, axis=-1, keepdims=True)
  a = jnp.sum(est * ref, axis=-1, keepdims=True) / (jnp.sum(ref * ref, axis=-1, keepdims=True)
                                                     + eps)
  target = a * ref
  noise = est - target
  return 10.0 * jnp.log10((jnp.sum(target ** 2, axis=-1) + eps)
                          / (jnp.sum(noise ** 2, axis=-1) + eps))


def si_sdr_loss(est: Array, ref: Array) -> Array:
  """-mean SI-SDR (dB) over the batch."""
  return -jnp.mean(si_sdr(est, ref))


# ---------------------------------------------------------------------------- adversarial

def discriminator_loss(real: Sequence[tuple[Array, list]],
                       fake: Sequence[tuple[Array, list]]) -> Array:
  """Least-squares GAN: sum over sub-discriminators of mean (1 - D(real))^2 + mean D(fake)^2."""
  return sum(jnp.mean((1.0 - r) ** 2) + jnp.mean(f ** 2) for (r, _), (f, _) in zip(real, fake))


def generator_adversarial_loss(fake: Sequence[tuple[Array, list]]) -> Array:
  """Least-squares GAN, generator side: sum over sub-discriminators of mean (1 - D(fake))^2."""
  return sum(jnp.mean((1.0 - f) ** 2) for f, _ in fake)


def feature_matching_loss(real: Sequence[tuple[Array, list]],
                          fake: Sequence[tuple[Array, list]]) -> Array:
  """Mean L1 between the discriminators' hidden features of real and generated audio,
  averaged over layers, summed over sub-discriminators; real features carry no gradient."""
  total = 0.0
  for (_, fr), (_, ff) in zip(real, fake):
    total += sum(jnp.mean(jnp.abs(jax.lax.stop_gradient(a) - b)) for a, b in zip(fr, ff)) / len(fr)
  return total


def metric_discriminator_loss(d_clean: Array, d_enhanced: Array, q_enhanced: Array,
                              d_noisy: Array | None = None,
                              q_noisy: Array | None = None) -> Array:
  """MetricGAN: the discriminator regresses the normalized quality score Q in [0, 1] of a pair
  (clean, x): Q(clean, clean) = 1. All arguments [B]. Returns the mean squared error."""
  loss = jnp.mean((d_clean - 1.0) ** 2) + jnp.mean((d_enhanced - q_enhanced) ** 2)
  if d_noisy is not None:
    loss = loss + jnp.mean((d_noisy - q_noisy) ** 2)
  return loss


def metric_generator_loss(d_enhanced: Array, target: float = 1.0) -> Array:
  """MetricGAN generator term: push the predicted score of (clean, enhanced) to `target`."""
  return jnp.mean((d_enhanced - target) ** 2)
