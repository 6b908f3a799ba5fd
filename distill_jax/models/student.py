"""The student: log-mel front end -> encoder -> output head, one Flax module.

The front end is parameter-free and part of the jitted step, so a student consumes the same
padded waveform batches as the teacher and no feature cache can go stale.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from distill_jax.audio import features as feats_lib
from distill_jax.models.heads.ctc import CtcHead

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class SpecAugment:
  """SpecAugment settings (applied only when training; rng stream 'specaug')."""
  num_freq_masks: int = 2
  freq_mask_width: int = 27
  num_time_masks: int = 10
  time_mask_max_ratio: float = 0.05


@dataclasses.dataclass(frozen=True)
class Vtlp:
  """Vocal tract length perturbation (training only; rng stream 'augment'): each utterance's
  spectrum is warped by a factor drawn uniformly from [min_warp, max_warp]."""
  min_warp: float = 0.85
  max_warp: float = 1.15

  def __post_init__(self):
    if not 0.0 < self.min_warp <= self.max_warp:
      raise ValueError(f"Vtlp needs 0 < min_warp <= max_warp, got {self.min_warp}, "
                       f"{self.max_warp}")


class CtcStudent(nn.Module):
  """waveform [B, S] + paddings -> dict(logits [B, T, V], paddings [B, T],
  hidden_states [L+1, B, T, D], encoder_outputs [B, T, D])."""
  encoder: nn.Module
  vocab_size: int
  frontend: feats_lib.LogMelConfig = feats_lib.LogMelConfig()
  specaug: SpecAugment | None = SpecAugment()
  vtlp: Vtlp | None = None
  head_dropout: float = 0.0

  def features(self, waveform: Array, wave_paddings: Array, *,
               train: bool) -> tuple[Array, Array]:
    """Normalized log-mel features [B, T, F] and frame paddings [B, T]."""
    warp = None
    if train and self.vtlp is not None:
      warp = jax.random.uniform(self.make_rng("augment"), waveform.shape[:1], jnp.float32,
                                self.vtlp.min_warp, self.vtlp.max_warp)
    x, pad = feats_lib.log_mel(waveform, wave_paddings, self.frontend, warp=warp)
    x = feats_lib.normalize_features(x, pad)
    if train and self.specaug is not None:
      x = feats_lib.spec_augment(
          x, pad, self.make_rng("specaug"),
          num_freq_masks=self.specaug.num_freq_masks,
          freq_mask_width=self.specaug.freq_mask_width,
          num_time_masks=self.specaug.num_time_masks,
          time_mask_max_ratio=self.specaug.time_mask_max_ratio)
    return x, pad

  @nn.compact
  def __call__(self, waveform: Array, wave_paddings: Array, *, train: bool) -> dict[str, Array]:
    x, pad = self.features(waveform, wave_paddings, train=train)
    enc = self.encoder(x, pad, train=train)
    logits = CtcHead(self.vocab_size, self.head_dropout, name="ctc_head")(
        enc["outputs"], train=train)
    return dict(logits=logits, paddings=enc["paddings"], hidden_states=enc["hidden_states"],
                encoder_outputs=enc["outputs"])
