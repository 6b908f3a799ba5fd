"""A wav2vec2 CTC model trained from scratch by the loop, with the student's call contract.

`config.model.encoder='wav2vec2'` (`models/build.py`) makes the loop train this; the trained
run exports to a Hugging Face folder (`train/export.py`) like any hub checkpoint.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from distill_jax.audio import speed as speed_lib
from distill_jax.models.wav2vec2 import Array, Dtype, Wav2Vec2Config, Wav2Vec2ForCTC
from distill_jax.models.wav2vec2 import normalize_waveform


class Wav2Vec2Trainee(nn.Module):
  """`Wav2Vec2ForCTC` with the student's call contract, for training one from scratch.

  waveform [B, S] + wave_paddings [B, S] (raw audio, as the input pipeline gives it) -> dict(
  logits [B, T, V], paddings [B, T], hidden_states [L+1, B, T, D], encoder_outputs [B, T, D]),
  so the CTC train step, evaluation and decoding treat it as any student (`models/build.py`,
  `config.model.encoder='wav2vec2'`). The waveform is normalized first when
  `config.do_normalize` (what the exported folder's processor does). The params tree IS
  `Wav2Vec2ForCTC(config)`'s (`wav2vec2`, `lm_head`; the wrapped module shares this scope), so
  `convert.hf_wav2vec2.export_hf_folder` exports a trained checkpoint unchanged.

  Attributes:
    config: architecture (transformers `Wav2Vec2Config` fields).
    dtype: compute dtype.
    time_masking: SpecAugment time masks in training (`mask_time_prob`; RNG 'specaug').
    speed: (min, max) speed-perturbation factors drawn per utterance in training (RNG
      'augment', audio/speed.py: a new voice and rate for a waveform model); None: off.
  """
  config: Wav2Vec2Config
  dtype: Dtype = jnp.float32
  time_masking: bool = False
  speed: tuple[float, float] | None = None

  def setup(self):
    self.ctc = Wav2Vec2ForCTC(self.config, self.dtype, self.time_masking)
    nn.share_scope(self, self.ctc)

  def __call__(self, waveform: Array, wave_paddings: Array, *, train: bool) -> dict[str, Array]:
    if train and self.speed is not None:
      factors = speed_lib.random_factors(self.make_rng("augment"), waveform.shape[0],
                                         *self.speed)
      waveform, wave_paddings = speed_lib.speed_perturb(waveform, wave_paddings, factors)
    x = (normalize_waveform(waveform, wave_paddings) if self.config.do_normalize
         else jnp.asarray(waveform, jnp.float32))
    out = self.ctc(x, wave_paddings, deterministic=not train)
    return dict(logits=out["logits"], paddings=out["frame_paddings"],
                hidden_states=out["hidden_states"], encoder_outputs=out["last_hidden_state"])
