"""Discriminators for the adversarial training of the denoiser (used in training only; the
deployed denoiser never runs them).

- `SpectralDiscriminator`: a 2-D conv stack over one log-compressed STFT magnitude (after
  UnivNet's multi-resolution discriminator, the spectral member of the HiFi-GAN family, with
  more striding); it returns per-patch logits and its hidden features (for feature matching).
- `MultiResolutionDiscriminator`: one `SpectralDiscriminator` per STFT resolution.
- `MetricDiscriminator`: MetricGAN's (Fu et al. 2019, 2021): from the magnitudes of a
  (clean, x) pair it regresses a normalized quality score of x in [0, 1] (e.g. PESQ or STOI,
  computed on the host by `enhance.metrics.quality_proxy`).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from distill_jax.enhance import losses

Array = jax.Array


def _compressed_magnitude(x: Array, fft: int, hop: int, win: int, power: float) -> Array:
  """[B, S] -> [B, T, F, 1] magnitude^power."""
  return (losses.stft_magnitude(x, fft, hop, win) ** power)[..., None]


class SpectralDiscriminator(nn.Module):
  """x: [B, S] -> (logits [B, T', F'], [hidden features [B, T_i, F_i, C]])."""
  resolution: tuple[int, int, int] = (512, 128, 512)
  channels: int = 16
  num_layers: int = 4

  @nn.compact
  def __call__(self, x: Array) -> tuple[Array, list[Array]]:
    h = _compressed_magnitude(x, *self.resolution, power=0.3)
    feats = []
    for i in range(self.num_layers):
      # Frequency halved by every layer, time by the third and later ones: a fifth of the cost
      # of UnivNet's frequency-only strides, which made the GAN step 14x the generator's on CPU.
      stride = (2, 2) if i >= 2 else (1, 2)
      h = nn.leaky_relu(nn.Conv(self.channels, (3, 9), strides=stride, padding="SAME",
                                name=f"conv_{i}")(h), 0.1)
      feats.append(h)
    h = nn.leaky_relu(nn.Conv(self.channels, (3, 3), padding="SAME", name="conv_post0")(h), 0.1)
    feats.append(h)
    logits = nn.Conv(1, (3, 3), padding="SAME", name="conv_post")(h)[..., 0]
    return logits, feats


class MultiResolutionDiscriminator(nn.Module):
  """x: [B, S] -> [(logits, features)] per resolution."""
  resolutions: Sequence[tuple[int, int, int]] = losses.DEFAULT_RESOLUTIONS
  channels: int = 16
  num_layers: int = 4

  @nn.compact
  def __call__(self, x: Array) -> list[tuple[Array, list[Array]]]:
    return [SpectralDiscriminator(tuple(r), self.channels, self.num_layers, name=f"res_{i}")(x)
            for i, r in enumerate(self.resolutions)]


class MetricDiscriminator(nn.Module):
  """(clean [B, S], x [B, S]) -> predicted normalized quality of x [B]."""
  resolution: tuple[int, int, int] = (512, 128, 512)
  channels: int = 16
  num_layers: int = 4

  @nn.compact
  def __call__(self, clean: Array, x: Array) -> Array:
    h = jnp.concatenate([_compressed_magnitude(clean, *self.resolution, power=0.3),
                         _compressed_magnitude(x, *self.resolution, power=0.3)], axis=-1)
    for i in range(self.num_layers):
      h = nn.leaky_relu(nn.Conv(self.channels * 2 ** min(i, 2), (4, 4), strides=(2, 2),
                                padding="SAME", name=f"conv_{i}")(h), 0.1)
    h = jnp.mean(h, axis=(1, 2))  # global average pool: any length
    h = nn.leaky_relu(nn.Dense(4 * self.channels, name="fc_0")(h), 0.1)
    return nn.Dense(1, name="fc_1")(h)[..., 0]
