"""The students: log-mel front end -> encoder -> output head (CTC, attention decoder or
RNN-Transducer), one Flax module each, sharing the front end and encoder (`_Student`).

The front end is parameter-free and part of the jitted step, so a student consumes the same
padded waveform batches as the teacher and no feature cache can go stale.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from distill_jax.audio import features as feats_lib
from distill_jax.losses import seq2seq
from distill_jax.models.heads.ctc import CtcHead
from distill_jax.models.heads.transducer import JointNetwork

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


class _Student(nn.Module):
  """Front end + encoder shared by every student family; heads live in the subclasses.

  waveform [B, S] + paddings [B, S] -> log-mel [B, T0, F] -> encoder -> dict(outputs [B, T, D],
  paddings [B, T], hidden_states [L+1, B, T, D]).
  """
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

  def encode_audio(self, waveform: Array, wave_paddings: Array, *,
                   train: bool) -> dict[str, Array]:
    x, pad = self.features(waveform, wave_paddings, train=train)
    return self.encoder(x, pad, train=train)


class CtcStudent(_Student):
  """waveform [B, S] + paddings -> dict(logits [B, T, V], paddings [B, T],
  hidden_states [L+1, B, T, D], encoder_outputs [B, T, D])."""

  @nn.compact
  def __call__(self, waveform: Array, wave_paddings: Array, *, train: bool) -> dict[str, Array]:
    enc = self.encode_audio(waveform, wave_paddings, train=train)
    logits = CtcHead(self.vocab_size, self.head_dropout, name="ctc_head")(
        enc["outputs"], train=train)
    return dict(logits=logits, paddings=enc["paddings"], hidden_states=enc["hidden_states"],
                encoder_outputs=enc["outputs"])


class _LabelConditionedStudent(_Student):
  """A student whose head reads the labels in training (teacher forcing), with an optional
  auxiliary CTC head on the encoder (`aux_ctc`: joint CTC training and frame-level KD)."""
  aux_ctc: bool = False

  def _encode(self, waveform: Array, wave_paddings: Array, train: bool) -> dict[str, Array]:
    """dict(paddings, hidden_states, encoder_outputs[, logits: aux CTC logits [B, T, V]])."""
    enc = self.encode_audio(waveform, wave_paddings, train=train)
    out = dict(paddings=enc["paddings"], hidden_states=enc["hidden_states"],
               encoder_outputs=enc["outputs"])
    if self.aux_ctc:
      out["logits"] = self.ctc_head(enc["outputs"], train=train)
    return out

  def encode(self, waveform: Array, wave_paddings: Array) -> dict[str, Array]:
    """Inference-time encoder outputs (for the decoders)."""
    return self._encode(waveform, wave_paddings, False)


class AttentionStudent(_LabelConditionedStudent):
  """Encoder + autoregressive attention decoder (models/heads/attention_decoder.py).

  __call__(waveform [B, S], wave_paddings [B, S], labels [B, U], label_paddings [B, U], train)
    -> dict(decoder_logits [B, U+1, V] for targets y_1 .. y_U </s>, decoder_paddings
       [B, U+1], decoder_targets [B, U+1], paddings [B, T], hidden_states, encoder_outputs
       [, logits: aux CTC]).
  Without labels (parameter initialization) the decoder reads one <s> per row.
  """
  decoder: nn.Module | None = None
  bos_id: int = 1
  eos_id: int = 2

  def setup(self):
    if self.decoder is None:
      raise ValueError("AttentionStudent needs a decoder module")
    if self.aux_ctc:
      self.ctc_head = CtcHead(self.vocab_size, self.head_dropout)

  def __call__(self, waveform: Array, wave_paddings: Array, labels: Array | None = None,
               label_paddings: Array | None = None, *, train: bool) -> dict[str, Array]:
    out = self._encode(waveform, wave_paddings, train)
    if labels is None:
      labels = jnp.zeros((waveform.shape[0], 0), jnp.int32)
      label_paddings = jnp.zeros((waveform.shape[0], 0), jnp.float32)
    inputs, targets, dec_pad = seq2seq.decoder_io(labels, label_paddings, self.bos_id,
                                                  self.eos_id)
    out.update(decoder_logits=self.decoder(out["encoder_outputs"], out["paddings"], inputs,
                                           train=train),
               decoder_targets=targets, decoder_paddings=dec_pad)
    return out


class TransducerStudent(_LabelConditionedStudent):
  """Encoder + RNN-T prediction and joint networks (models/heads/transducer.py).

  __call__(waveform, wave_paddings, labels [B, U], label_paddings [B, U], train)
    -> dict(joint_logits [B, T, U+1, V], paddings [B, T], hidden_states, encoder_outputs
       [, logits: aux CTC]). The prediction network starts from the blank id.
  """
  predictor: nn.Module | None = None
  joint_dim: int = 256
  blank_id: int = 0

  def setup(self):
    if self.predictor is None:
      raise ValueError("TransducerStudent needs a prediction network module")
    self.joint = JointNetwork(self.vocab_size, self.joint_dim)
    if self.aux_ctc:
      self.ctc_head = CtcHead(self.vocab_size, self.head_dropout)

  def __call__(self, waveform: Array, wave_paddings: Array, labels: Array | None = None,
               label_paddings: Array | None = None, *, train: bool) -> dict[str, Array]:
    out = self._encode(waveform, wave_paddings, train)
    b = waveform.shape[0]
    if labels is None:
      labels = jnp.zeros((b, 0), jnp.int32)
      label_paddings = jnp.zeros((b, 0), jnp.float32)
    labels = jnp.where(label_paddings > 0.5, self.blank_id, labels).astype(jnp.int32)
    tokens = jnp.concatenate([jnp.full((b, 1), self.blank_id, jnp.int32), labels], axis=1)
    g = self.predictor(tokens, train=train)                          # [B, U+1, Dp]
    out["joint_logits"] = self.joint(out["encoder_outputs"], g)     # [B, T, U+1, V]
    return out

  def predict_step(self, state, tokens: Array):
    """One prediction-network step projected for the joint: (pred_proj [N, J], state)."""
    g, state = self.predictor.step(state, tokens)
    return self.joint.project_prediction(g), state

  def init_predictor(self, batch: int):
    return self.predictor.init_state(batch)

  def project_encoder(self, enc: Array) -> Array:
    return self.joint.project_encoder(enc)

  def joint_logits(self, enc_proj: Array, pred_proj: Array) -> Array:
    return self.joint.joint(enc_proj, pred_proj)
