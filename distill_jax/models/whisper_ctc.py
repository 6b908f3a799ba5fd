"""Whisper's encoder with a character-CTC head: frame posteriors from an encoder-decoder model.

Whisper's decoder emits BPE tokens, one sequence per window; the students' KL term needs
posteriors over the project's characters at every frame. `WhisperCtc` puts a small CTC head on
Whisper's encoder (kept frozen by default) and has the student's call contract, so the loop
trains the head like any CTC model (`config.model.encoder='whisper_ctc'`, `models/build.py`) and
`models/whisper_teacher.py` serves the result as a `Teacher`.

    waveform [B, S], wave_paddings [B, S] (16 kHz)
      -> Whisper log-mel [B, T, M]   (audio/whisper_features.py; T = W // 160)
      -> encoder hidden states [L + 1, B, T', D]   (T' = (T - 1) // 2 + 1: 20 ms frames)
      -> softmax(w) . hidden states   (a learned weighted sum of the L + 1 states, or the last)
      -> LayerNorm -> `head_layers` pre-LN transformer blocks -> LayerNorm -> Dense(V) logits

The window W is `window_samples` (480000 = Whisper's 30 s window, every batch padded to it) or,
with 0, the batch's own padded length: a shortened window, which Whisper did not see in
training but which costs a fraction of a full window for short clips (`models/whisper.py`).
Audio longer than 30 s is an error (Whisper's positions end there). Whisper attends to every
frame of its window, padding included; so does the head (no mask), as the teacher did in
training.

Params: `encoder` (the `model/encoder` subtree of `models.whisper`, warm-started from a Hugging
Face folder: `train/warm_start.py`), `layer_weights` [L + 1] (with `layer_sum`), `ctc_head`.
With `tuned_layers=0` the encoder's outputs are under `stop_gradient` (no backward pass through
it); with k > 0 its top k layers and final layer norm are trained with the head (gradients stop
below them: `WhisperEncoder(frozen_layers=L - k)`), and the teacher folder stores those layers
beside the head (`convert/whisper_ctc_folder.py`). The optimizer leaves the frozen params alone
through `config.train.frozen_params` (`frozen_encoder_params(L, k)` gives the patterns).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from distill_jax.audio import whisper_features
from distill_jax.models import whisper as whisper_lib

Array = jax.Array
FRAME_SAMPLES = 2 * whisper_features.HOP_LENGTH  # 320 samples = 20 ms per encoder frame


def window_frames(config: whisper_lib.WhisperConfig, window_samples: int,
                  num_samples: int) -> int:
  """Encoder frames T' for a batch padded to `num_samples` samples (see the module docstring).

  Raises ValueError naming the lengths when the audio does not fit the window.
  """
  limit = config.num_frames * whisper_features.HOP_LENGTH
  window = window_samples or num_samples
  if num_samples > window or window > limit:
    raise ValueError(
        f"audio of {num_samples} samples ({num_samples / whisper_features.SAMPLE_RATE:.2f} s) "
        f"is longer than the Whisper teacher's window of "
        f"{min(window, limit) / whisper_features.SAMPLE_RATE:.2f} s (at most "
        f"{limit / whisper_features.SAMPLE_RATE:.0f} s: Whisper's positions end there); cut "
        "the clip or raise config.model.whisper_ctc.window_samples")
  return config.encoder_length(whisper_features.num_frames(window))


def _layer_norm(name: str) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=whisper_lib.LAYER_NORM_EPS, dtype=jnp.float32,
                      param_dtype=jnp.float32, name=name)


class WhisperCtc(nn.Module):
  """Whisper encoder + character-CTC head with the student's call contract.

  Attributes:
    whisper: the Whisper architecture (only the encoder fields are used).
    vocab_size: V, the project's character vocabulary (blank included).
    head_layers: pre-LN transformer blocks in the head (0: LayerNorm + Dense only).
    head_heads: attention heads of those blocks (width = the encoder's d_model).
    head_ffn_dim: their feed-forward width.
    layer_sum: a learned softmax-weighted sum of the L + 1 encoder states (True) or the last.
    tuned_layers: encoder layers trained with the head, from the top (0: a frozen encoder).
    window_samples: Whisper's window in samples (480000 = 30 s) or 0 for the batch's length.
    dtype: compute dtype (layer norms, softmax and logits stay float32).
  """
  whisper: whisper_lib.WhisperConfig
  vocab_size: int
  head_layers: int = 0
  head_heads: int = 4
  head_ffn_dim: int = 1024
  layer_sum: bool = True
  tuned_layers: int = 0
  window_samples: int = 0
  dtype: whisper_lib.Dtype = jnp.float32

  def num_frames(self, num_samples: int) -> int:
    return window_frames(self.whisper, self.window_samples, num_samples)

  @nn.compact
  def __call__(self, waveform: Array, wave_paddings: Array, *,
               train: bool = False) -> dict[str, Array]:
    """waveform [B, S], wave_paddings [B, S] -> dict(logits [B, T', V] float32, paddings
    [B, T'], hidden_states [L + 1, B, T', D], encoder_outputs [B, T', D]).

    `train` is accepted for the contract; nothing here differs between training and eval.
    """
    del train
    cfg = self.whisper
    t_out = self.num_frames(waveform.shape[1])
    window = self.window_samples or waveform.shape[1]
    feats, feat_paddings = whisper_features.log_mel_spectrogram(
        waveform, wave_paddings, num_mels=cfg.num_mel_bins, num_samples=window)
    if not 0 <= self.tuned_layers <= cfg.encoder_layers:
      raise ValueError(f"tuned_layers={self.tuned_layers} is not in 0..{cfg.encoder_layers} "
                       "(the encoder's layers)")
    frozen = cfg.encoder_layers - self.tuned_layers if self.tuned_layers else None
    out = whisper_lib.WhisperEncoder(cfg, self.dtype, name="encoder")(
        feats, allow_shorter=True, frozen_layers=frozen)
    states = out["hidden_states"]                                        # [L + 1, B, T', D]
    if not self.tuned_layers:
      states = jax.lax.stop_gradient(states)
    if self.layer_sum:
      w = self.param("layer_weights", nn.initializers.zeros, (states.shape[0],), jnp.float32)
      x = jnp.einsum("l,lbtd->btd", jax.nn.softmax(w), states.astype(jnp.float32))
    else:
      x = states[-1].astype(jnp.float32)
    x = _layer_norm("input_norm")(x)
    block = dataclasses.replace(cfg, encoder_attention_heads=self.head_heads,
                                encoder_ffn_dim=self.head_ffn_dim)
    x = _CtcHead(block, self.vocab_size, self.head_layers, self.dtype, name="ctc_head")(x)
    paddings = feat_paddings[:, ::2][:, :t_out]
    return dict(logits=x, paddings=paddings, hidden_states=states,
                encoder_outputs=states[-1])


def tuned_encoder_prefixes(num_layers: int, tuned_layers: int) -> tuple[str, ...]:
  """'/'-joined param path prefixes of the encoder params a head with `tuned_layers` trains."""
  if not tuned_layers:
    return ()
  return tuple(f"encoder/layers_{i}/" for i in range(num_layers - tuned_layers, num_layers)) + (
      "encoder/layer_norm/",)


def frozen_encoder_params(num_layers: int, tuned_layers: int) -> tuple[str, ...]:
  """`config.train.frozen_params` patterns (regexes) for the encoder params left untrained."""
  if not tuned_layers:
    return ("encoder/",)
  frozen = ["conv1", "conv2", "embed_positions"] + [
      f"layers_{i}" for i in range(num_layers - tuned_layers)]
  return (f"encoder/({'|'.join(frozen)})/",)


class _CtcHead(nn.Module):
  """[B, T, D] -> logits [B, T, V]: `num_layers` Whisper encoder blocks, LayerNorm, Dense."""
  block: whisper_lib.WhisperConfig
  vocab_size: int
  num_layers: int
  dtype: whisper_lib.Dtype

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = x.astype(self.dtype)
    for i in range(self.num_layers):
      x = whisper_lib.WhisperEncoderLayer(self.block, self.dtype, name=f"layers_{i}")(x)
    x = _layer_norm("layer_norm")(x)
    return nn.Dense(self.vocab_size, dtype=jnp.float32, param_dtype=jnp.float32,
                    name="out")(x.astype(jnp.float32))
