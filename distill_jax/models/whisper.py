"""Whisper (encoder-decoder speech recognizer) in Flax linen: a teacher and a transcriber.

A re-implementation of Hugging Face transformers' PyTorch `WhisperForConditionalGeneration`
(transformers v5 ships no Flax models), equal in float32 in eval mode up to rounding: the
reference tests in tests/models/test_whisper.py check every encoder hidden state and the logits
against transformers within 1e-4 (the real tiny.en on a LibriVox clip: hidden states within
3.5e-5, logits of magnitude ~40 within 7e-5, as far from transformers' as transformers' are from
its own float64 run). Weights come from `distill_jax.convert.hf_whisper`, features from
`distill_jax.audio.whisper_features`, decoding from `distill_jax.decode.whisper`. Any size works
(tiny .. large-v3, English-only or multilingual, 80 or 128 mel bins): everything is read from the
config.

Layout (the params tree mirrors the transformers state dict, `.` -> `/`, `layers.i` ->
`layers_i`, Linear `weight` [out, in] -> `kernel` [in, out], Conv1d `weight` [out, in, k] ->
`kernel` [k, in, out], LayerNorm `weight` -> `scale`, Embedding `weight` -> `embedding`):

* encoder (`model/encoder`): conv1 (k3, s1, p1) + exact GELU, conv2 (k3, s2, p1) + exact GELU,
  plus the sinusoidal positions (`embed_positions`, carried as a parameter because checkpoints
  store it), pre-LN blocks (`self_attn_layer_norm`, `self_attn`, `final_layer_norm`, `fc1`, `fc2`),
  final `layer_norm`.
* decoder (`model/decoder`): token embedding `embed_tokens`, learned positions `embed_positions`,
  pre-LN blocks with causal self-attention and cross-attention (`encoder_attn`,
  `encoder_attn_layer_norm`), final `layer_norm`, logits = hidden @ embed_tokens^T (tied, as
  transformers' `proj_out`; an untied `proj_out` {kernel [D, V]} exists only when
  `tie_word_embeddings` is False).
* attention: q/v/out projections with bias, `k_proj` without bias; q is scaled by head_dim^-0.5
  after its projection (transformers' order). The encoder's self-attention runs in blocks of
  queries (`self_attention`, for speed on CPU), the decoder's through `WhisperAttention.attend`.

Encoder hidden states follow transformers 5.x `output_hidden_states=True`: L + 1 entries, entry 0
the input of the first layer (conv stem + positions), entry i the output of layer i, and the last
entry the output of the final layer norm (transformers ties it to `last_hidden_state`; the raw
output of the last layer is not returned).

Input length. transformers (and openai-whisper) accept exactly 3000 mel frames
(2 * max_source_positions, 30 s). `encode` checks that by default; with `allow_shorter=True` it
takes T <= 3000 frames and uses the first (T - 1) // 2 + 1 positions, for experiments with
shortened windows (the model was trained on 30 s windows; shorter ones are out of distribution).
There is no attention mask, as in Whisper: padding inside the window is attended (log-mel silence).

Decoding state (`init_cache` / `decode`) is a pytree of static shapes: cross-attention K/V
computed once from the encoder output, per layer [B, H, S, hd], and self-attention K/V of a fixed
maximum length, per layer [N, H, T_max, hd], written with `lax.dynamic_update_slice` at the
current position. N = B * G rows may decode G hypotheses per utterance (beam search): row
n = b * G + g reads utterance b's cross K/V, which is never copied per hypothesis.

Dtypes: params are float32; `dtype` is the compute dtype (e.g. jnp.bfloat16): matmuls and
activations run in it; layer-norm statistics, attention softmax and the logits are float32. On
GPU/TPU, float32 matmuls may run at reduced precision by default; wrap calls in
`jax.default_matmul_precision("highest")` when exactness to transformers matters there.

Not implemented (training-time or unused by inference): dropout, LayerDrop, SpecAugment
(`apply_spec_augment`), `WhisperForAudioClassification`'s weighted layer sum. `scale_embedding`
is accepted and, as in transformers' Whisper (which computes `embed_scale` but never applies
it), has no effect.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Dtype = Any
Cache = dict[str, tuple[Array, ...]]

SAMPLE_RATE = 16000
LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default; Whisper's config has no field for it.


def _gelu(x: Array) -> Array:
  """Exact (erf) GELU in transformers' form x * 0.5 * (1 + erf(x / sqrt(2))).

  The same function as `jax.nn.gelu(approximate=False)`, which goes through erfc: XLA evaluates
  erfc's three branches (a polynomial, two rational fits with an exp, two divisions) for every
  element, erf is one rational polynomial. Python-float constants keep x's dtype.
  """
  return x * (0.5 + 0.5 * jax.lax.erf(x * 0.7071067811865476))


# transformers `ACT2FN` names we support; "gelu" is the exact (erf) GELU.
_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "gelu": _gelu,
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}

# config.json keys that are derived (written back by `to_hf_dict`), not kept in `extra`.
_DERIVED_KEYS = ("model_type", "architectures")
# transformers' attribute_map aliases: alias -> field.
_ALIASES = {"hidden_size": "d_model", "num_hidden_layers": "encoder_layers",
            "num_attention_heads": "encoder_attention_heads"}


def _tuple_or_none(v: Any) -> tuple[int, ...] | None:
  return None if v is None else tuple(int(x) for x in v)


@dataclasses.dataclass(frozen=True)
class WhisperConfig:
  """The fields of transformers' `WhisperConfig` the model needs (same names and defaults).

  Every other `config.json` entry is kept in `extra` (not hashed or compared) so that export
  writes the same config back. Token ids here are the model config's; decoding reads the
  generation config too (see `distill_jax.decode.whisper`).
  """
  vocab_size: int = 51865
  num_mel_bins: int = 80
  d_model: int = 384
  encoder_layers: int = 4
  encoder_attention_heads: int = 6
  encoder_ffn_dim: int = 1536
  decoder_layers: int = 4
  decoder_attention_heads: int = 6
  decoder_ffn_dim: int = 1536
  activation_function: str = "gelu"
  max_source_positions: int = 1500
  max_target_positions: int = 448
  scale_embedding: bool = False
  tie_word_embeddings: bool = True
  pad_token_id: int | None = 50256
  bos_token_id: int | None = 50256
  eos_token_id: int | tuple[int, ...] | None = 50256
  decoder_start_token_id: int = 50257
  suppress_tokens: tuple[int, ...] | None = None
  begin_suppress_tokens: tuple[int, ...] | None = (220, 50256)
  extra: Mapping[str, Any] = dataclasses.field(
      default_factory=dict, hash=False, compare=False, repr=False)

  def __post_init__(self):
    for name in ("suppress_tokens", "begin_suppress_tokens"):
      object.__setattr__(self, name, _tuple_or_none(getattr(self, name)))
    if isinstance(self.eos_token_id, (list, tuple)):
      object.__setattr__(self, "eos_token_id", tuple(int(x) for x in self.eos_token_id))
    self.validate()

  # --- derived -----------------------------------------------------------------------------------
  @property
  def num_frames(self) -> int:
    """Mel frames of a full window: 2 * max_source_positions (3000 = 30 s at a 10 ms hop)."""
    return 2 * self.max_source_positions

  @property
  def is_multilingual(self) -> bool:
    """openai-whisper's rule (vocabulary of >= 51865 tokens); the generation config, when there
    is one, is the better source (`is_multilingual`, `lang_to_id`)."""
    return self.vocab_size >= 51865

  def encoder_length(self, num_frames: int) -> int:
    """Encoder frames for `num_frames` mel frames: (T - 1) // 2 + 1 (conv2 has stride 2)."""
    return (num_frames - 1) // 2 + 1

  def validate(self) -> None:
    """Raises ValueError naming the offending field."""
    for name in ("vocab_size", "num_mel_bins", "d_model", "encoder_layers", "decoder_layers",
                 "encoder_attention_heads", "decoder_attention_heads", "encoder_ffn_dim",
                 "decoder_ffn_dim", "max_source_positions", "max_target_positions"):
      v = getattr(self, name)
      if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0:
        raise ValueError(f"{name}={v!r}: must be a positive integer")
    for name in ("encoder_attention_heads", "decoder_attention_heads"):
      if self.d_model % getattr(self, name):
        raise ValueError(f"d_model={self.d_model} is not divisible by {name}="
                         f"{getattr(self, name)}")
    if self.d_model % 2:
      raise ValueError(f"d_model={self.d_model}: the sinusoidal positions need an even width")
    if self.activation_function not in _ACTIVATIONS:
      raise ValueError(f"activation_function={self.activation_function!r}: supported are "
                       f"{sorted(_ACTIVATIONS)}")
    if not 0 <= self.decoder_start_token_id < self.vocab_size:
      raise ValueError(f"decoder_start_token_id={self.decoder_start_token_id} is outside the "
                       f"vocabulary (vocab_size={self.vocab_size})")

  # --- transformers config.json ------------------------------------------------------------------
  @classmethod
  def from_hf_dict(cls, hf: Mapping[str, Any], source: str = "config.json") -> "WhisperConfig":
    """Builds the config from a transformers `config.json` dict.

    Keys missing from the dict take transformers' defaults (transformers may write only the
    values that differ from them). `source` names the file in error messages.
    """
    hf = dict(hf)
    model_type = hf.get("model_type", "whisper")
    if model_type != "whisper":
      raise ValueError(f"{source}: model_type={model_type!r}, expected 'whisper'")
    fields = {f.name for f in dataclasses.fields(cls)} - {"extra"}
    for alias, name in _ALIASES.items():
      if alias in hf:
        v = hf.pop(alias)
        if name in hf and hf[name] != v:
          raise ValueError(f"{source}: {alias}={v!r} contradicts {name}={hf[name]!r}")
        hf.setdefault(name, v)
    kwargs = {k: hf.pop(k) for k in list(hf) if k in fields}
    for key in _DERIVED_KEYS:
      hf.pop(key, None)
    try:
      return cls(**kwargs, extra=hf)
    except (TypeError, ValueError) as e:
      raise ValueError(f"{source}: {e}") from e

  def to_hf_dict(self) -> dict[str, Any]:
    """The transformers `config.json` dict (with `extra` entries kept as loaded)."""
    out = dict(self.extra)
    for f in dataclasses.fields(self):
      if f.name == "extra":
        continue
      v = getattr(self, f.name)
      out[f.name] = list(v) if isinstance(v, tuple) else v
    out["model_type"] = "whisper"
    out["architectures"] = ["WhisperForConditionalGeneration"]
    return out


# --- building blocks -----------------------------------------------------------------------------

def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> np.ndarray:
  """Whisper's encoder positions [length, channels] float32: [sin | cos] of position x
  exp(-log(max_timescale) / (channels / 2 - 1) * i), i < channels / 2."""
  if channels % 2:
    raise ValueError(f"channels={channels}: must be even")
  inc = math.log(max_timescale) / (channels // 2 - 1)
  inv = np.exp(-inc * np.arange(channels // 2, dtype=np.float64))
  t = np.arange(length, dtype=np.float64)[:, None] * inv[None, :]
  return np.concatenate([np.sin(t), np.cos(t)], axis=1).astype(np.float32)


def _layer_norm(name: str, dtype: Dtype) -> nn.LayerNorm:
  # Two-pass variance, as torch.nn.LayerNorm; statistics in float32 whatever `dtype`.
  return nn.LayerNorm(epsilon=LAYER_NORM_EPS, dtype=dtype, param_dtype=jnp.float32,
                      use_fast_variance=False, name=name)


_INIT = nn.initializers.normal(0.02)  # transformers' init_std; real weights come from files.
_NEG = float(np.finfo(np.float32).min)


QUERY_BLOCK = 100  # queries per block in `self_attention` (Whisper's 1500 = 15 blocks).


def self_attention(q: Array, k: Array, v: Array, dtype: Dtype = jnp.float32,
                   block: int = QUERY_BLOCK) -> Array:
  """Unmasked softmax attention computed one head and one block of queries at a time.

  Scaled queries q [B, H, T, hd], keys/values [B, H, S, hd] -> [B, H, T, hd]. Each block
  holds whole rows of scores (block x S, float32), so the row softmax is the usual one: row max,
  exp, row sum; the division by the row sum comes after the product with v ([block, hd] instead
  of [block, S] divisions), as in flash attention. Whisper's encoder (T = S = 1500) is why: the
  [H, T, S] scores of a whole layer (54 MB) do not fit in cache and XLA:CPU streams them through
  memory several times (matmul out, softmax in/out, transposes, matmul in), about 3x the time of
  the blocked loop (`lax.map` over heads, then over query blocks; T is padded to a whole number
  of blocks with zero queries, whose rows are dropped).
  """
  b, h, t, hd = q.shape
  s = k.shape[2]
  if k.shape != (b, h, s, hd) or v.shape != k.shape:
    raise ValueError(f"self_attention: q {q.shape}, k {k.shape}, v {v.shape} do not match")
  block = max(1, min(block, t))
  n = -(-t // block)
  q = jnp.pad(q.reshape(b * h, t, hd), ((0, 0), (0, n * block - t), (0, 0)))

  def head(args):
    qh, kh, vh = args                                               # [n, block, hd], [S, hd]

    def rows(qb):
      scores = jnp.einsum("td,sd->ts", qb, kh, preferred_element_type=jnp.float32)
      e = jnp.exp(scores - jnp.max(scores, axis=-1, keepdims=True))
      out = jnp.einsum("ts,sd->td", e.astype(dtype), vh, preferred_element_type=jnp.float32)
      return (out / jnp.sum(e, axis=-1, keepdims=True)).astype(dtype)

    return jax.lax.map(rows, qh)

  out = jax.lax.map(head, (q.reshape(b * h, n, block, hd), k.reshape(b * h, s, hd),
                           v.reshape(b * h, s, hd)))
  return out.reshape(b, h, n * block, hd)[:, :, :t]


class WhisperAttention(nn.Module):
  """Multi-head attention; params `q_proj`, `k_proj` (no bias), `v_proj`, `out_proj` [D, D].

  Shapes: queries come from x [N, T, D]; keys/values [B, H, S, hd] with N = B * G (G query rows
  per key/value row, G = 1 except in beam search).
  """
  d_model: int
  num_heads: int
  dtype: Dtype = jnp.float32

  def setup(self):
    dense = functools.partial(nn.Dense, self.d_model, dtype=self.dtype, param_dtype=jnp.float32,
                              kernel_init=_INIT)
    self.q_proj = dense()
    self.k_proj = dense(use_bias=False)
    self.v_proj = dense()
    self.out_proj = dense()

  def _heads(self, x: Array) -> Array:
    """[B, T, D] -> [B, H, T, hd]."""
    b, t, _ = x.shape
    return x.reshape(b, t, self.num_heads, -1).transpose(0, 2, 1, 3)

  def key_value(self, x: Array) -> tuple[Array, Array]:
    """x [B, S, D] -> (k, v), each [B, H, S, hd] in the compute dtype."""
    return self._heads(self.k_proj(x)), self._heads(self.v_proj(x))

  def query(self, x: Array) -> Array:
    """x [N, T, D] -> scaled queries [N, H, T, hd] (scaled after the projection, as HF)."""
    hd = self.d_model // self.num_heads
    return self._heads(self.q_proj(x) * jnp.asarray(hd ** -0.5, self.dtype))

  def attend(self, q: Array, k: Array, v: Array, mask: Array | None = None) -> Array:
    """Scaled queries q [N, H, T, hd], k/v [B, H, S, hd] (N = B * G), mask broadcastable to
    [T, S] (True = attend) or None -> out_proj(attention) [N, T, D]."""
    n, h, t, hd = q.shape
    b = k.shape[0]
    if n % b:
      raise ValueError(f"{n} query rows are not a multiple of {b} key/value rows")
    q = q.reshape(b, n // b, h, t, hd)
    scores = jnp.einsum("bghtd,bhsd->bghts", q, k, preferred_element_type=jnp.float32)
    if mask is not None:
      scores = jnp.where(mask, scores, _NEG)
    probs = jax.nn.softmax(scores, axis=-1)
    out = jnp.einsum("bghts,bhsd->bgthd", probs.astype(self.dtype), v)
    return self.out_proj(out.reshape(n, t, h * hd))

  def __call__(self, x: Array) -> Array:
    """Unmasked self-attention (the encoder): x [B, T, D] -> [B, T, D].

    Computed by `self_attention` in blocks of queries (the same softmax rows as `attend`)."""
    k, v = self.key_value(x)
    out = self_attention(self.query(x), k, v, self.dtype)
    b, t, _ = x.shape
    return self.out_proj(out.transpose(0, 2, 1, 3).reshape(b, t, self.d_model))


class WhisperEncoderLayer(nn.Module):
  """Pre-LN block: x + self_attn(LN(x)), then x + fc2(act(fc1(LN(x)))). [B, T, D] -> same."""
  config: WhisperConfig
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg = self.config
    attn = WhisperAttention(cfg.d_model, cfg.encoder_attention_heads, self.dtype, name="self_attn")
    x = x + attn(_layer_norm("self_attn_layer_norm", self.dtype)(x))
    h = _layer_norm("final_layer_norm", self.dtype)(x)
    dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=jnp.float32,
                              kernel_init=_INIT)
    h = _ACTIVATIONS[cfg.activation_function](dense(cfg.encoder_ffn_dim, name="fc1")(h))
    return x + dense(cfg.d_model, name="fc2")(h)


class WhisperEncoder(nn.Module):
  """Conv stem + positions + pre-LN blocks + final layer norm.

  Params: `conv1` {kernel [3, M, D], bias}, `conv2` {kernel [3, D, D], bias}, `embed_positions`
  {embedding [P, D]}, `layers_{i}`, `layer_norm`.
  """
  config: WhisperConfig
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features: Array, allow_shorter: bool = False,
               frozen_layers: int | None = None) -> dict[str, Array]:
    """Encodes log-mel features.

    Args:
      features: [B, T, M] log-mel frames (`whisper_features.log_mel_spectrogram`; transformers'
        `input_features` [B, M, T] transposed). T must be `config.num_frames` (3000) unless
        `allow_shorter`, then 1 <= T <= 3000.
      allow_shorter: accept shortened windows (see the module docstring).
      frozen_layers: None (gradients reach every param) or k in 0..L: gradients stop at the
        input of layer k, so the stem, the positions and layers 0..k-1 get none and the states
        they make are constants (the top L - k layers and the final layer norm are tuned).

    Returns:
      dict with
        last_hidden_state: [B, S, D], S = (T - 1) // 2 + 1 (1500 for 3000 frames), after the
          final layer norm.
        hidden_states: [L + 1, B, S, D] (transformers' `encoder_hidden_states`; the last entry
          equals last_hidden_state).
    """
    cfg = self.config
    if features.ndim != 3 or features.shape[-1] != cfg.num_mel_bins:
      raise ValueError(f"features must be [B, T, {cfg.num_mel_bins}] (num_mel_bins), got "
                       f"{features.shape}")
    t = features.shape[1]
    if t != cfg.num_frames and not (allow_shorter and 1 <= t <= cfg.num_frames):
      raise ValueError(
          f"Whisper takes {cfg.num_frames} mel frames (2 x max_source_positions), got {t}"
          + ("" if allow_shorter else "; pass allow_shorter=True for a shortened window"))
    conv = functools.partial(nn.Conv, cfg.d_model, kernel_size=(3,), padding=((1, 1),),
                             dtype=self.dtype, param_dtype=jnp.float32)
    x = _gelu(conv(name="conv1")(features.astype(self.dtype)))
    x = _gelu(conv(strides=(2,), name="conv2")(x))
    pos = nn.Embed(cfg.max_source_positions, cfg.d_model, dtype=self.dtype,
                   param_dtype=jnp.float32,
                   embedding_init=lambda *_: jnp.asarray(
                       sinusoids(cfg.max_source_positions, cfg.d_model)),
                   name="embed_positions")
    if frozen_layers is not None and not 0 <= frozen_layers <= cfg.encoder_layers:
      raise ValueError(f"frozen_layers={frozen_layers} is not in 0..{cfg.encoder_layers} "
                       "(encoder_layers)")
    x = x + pos.embedding[:x.shape[1]].astype(self.dtype)
    states = [x]
    for i in range(cfg.encoder_layers):
      if i == frozen_layers:
        states = [jax.lax.stop_gradient(s) for s in states]
        x = states[-1]
      x = WhisperEncoderLayer(cfg, self.dtype, name=f"layers_{i}")(x)
      states.append(x)
    if frozen_layers == cfg.encoder_layers:
      states = [jax.lax.stop_gradient(s) for s in states]
      x = states[-1]
    x = _layer_norm("layer_norm", self.dtype)(x)
    states[-1] = x
    return {"last_hidden_state": x, "hidden_states": jnp.stack(states)}


class WhisperDecoderLayer(nn.Module):
  """Pre-LN block: causal self-attention, cross-attention, feed-forward.

  Params: `self_attn`, `self_attn_layer_norm`, `encoder_attn`, `encoder_attn_layer_norm`, `fc1`,
  `fc2`, `final_layer_norm`.
  """
  config: WhisperConfig
  dtype: Dtype = jnp.float32

  def setup(self):
    cfg = self.config
    self.self_attn = WhisperAttention(cfg.d_model, cfg.decoder_attention_heads, self.dtype)
    self.self_attn_layer_norm = _layer_norm(None, self.dtype)
    self.encoder_attn = WhisperAttention(cfg.d_model, cfg.decoder_attention_heads, self.dtype)
    self.encoder_attn_layer_norm = _layer_norm(None, self.dtype)
    dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=jnp.float32,
                              kernel_init=_INIT)
    self.fc1 = dense(cfg.decoder_ffn_dim)
    self.fc2 = dense(cfg.d_model)
    self.final_layer_norm = _layer_norm(None, self.dtype)

  def cross_key_value(self, encoder_hidden: Array) -> tuple[Array, Array]:
    """[B, S, D] -> cross-attention (k, v), each [B, H, S, hd]."""
    return self.encoder_attn.key_value(encoder_hidden)

  def __call__(self, x: Array, self_k: Array, self_v: Array, cross_k: Array, cross_v: Array,
               index: Array) -> tuple[Array, Array, Array]:
    """One decoding call over T new positions index .. index + T - 1.

    Args:
      x: [N, T, D] inputs of the new positions.
      self_k, self_v: [N, H, T_max, hd] cached self-attention keys/values (valid before index).
      cross_k, cross_v: [B, H, S, hd] (N = B * G).
      index: scalar int32, position of x[:, 0].

    Returns:
      (out [N, T, D], self_k, self_v updated at index .. index + T - 1).
    """
    t = x.shape[1]
    t_max = self_k.shape[2]
    h = self.self_attn_layer_norm(x)
    k_new, v_new = self.self_attn.key_value(h)
    zero = jnp.zeros((), jnp.int32)
    start = (zero, zero, jnp.asarray(index, jnp.int32), zero)
    self_k = jax.lax.dynamic_update_slice(self_k, k_new.astype(self_k.dtype), start)
    self_v = jax.lax.dynamic_update_slice(self_v, v_new.astype(self_v.dtype), start)
    # Query t (position index + t) sees keys 0 .. index + t; later slots are empty or stale.
    mask = jnp.arange(t_max)[None, :] <= (index + jnp.arange(t))[:, None]      # [T, T_max]
    x = x + self.self_attn.attend(self.self_attn.query(h), self_k, self_v, mask)
    h = self.encoder_attn_layer_norm(x)
    x = x + self.encoder_attn.attend(self.encoder_attn.query(h), cross_k, cross_v)
    h = self.final_layer_norm(x)
    x = x + self.fc2(_ACTIVATIONS[self.config.activation_function](self.fc1(h)))
    return x, self_k, self_v


class WhisperDecoder(nn.Module):
  """Token + position embeddings, decoder layers, final layer norm.

  Params: `embed_tokens` {embedding [V, D]}, `embed_positions` {embedding [T_pos, D]},
  `layers_{i}`, `layer_norm`.
  """
  config: WhisperConfig
  dtype: Dtype = jnp.float32

  def setup(self):
    cfg = self.config
    self.embed_tokens = nn.Embed(cfg.vocab_size, cfg.d_model, dtype=self.dtype,
                                 param_dtype=jnp.float32, embedding_init=_INIT)
    self.embed_positions = nn.Embed(cfg.max_target_positions, cfg.d_model, dtype=self.dtype,
                                    param_dtype=jnp.float32, embedding_init=_INIT)
    self.layers = [WhisperDecoderLayer(cfg, self.dtype) for _ in range(cfg.decoder_layers)]
    self.layer_norm = _layer_norm(None, self.dtype)

  def init_cache(self, encoder_hidden: Array, max_length: int, group: int = 1) -> Cache:
    """Decoding state for B utterances and G = `group` hypotheses each.

    Args:
      encoder_hidden: [B, S, D] encoder output.
      max_length: T_max, the most decoder positions (prompt + new tokens) this state holds;
        at most `config.max_target_positions`.
      group: G hypotheses per utterance (rows n = b * G + g).

    Returns:
      dict with `cross_k`, `cross_v`: L x [B, H, S, hd]; `self_k`, `self_v`: L x
      [B * G, H, T_max, hd] zeros (compute dtype).
    """
    cfg = self.config
    if not 1 <= max_length <= cfg.max_target_positions:
      raise ValueError(f"max_length={max_length}: must be in [1, max_target_positions="
                       f"{cfg.max_target_positions}]")
    b = encoder_hidden.shape[0]
    h = cfg.decoder_attention_heads
    shape = (b * group, h, max_length, cfg.d_model // h)
    cross = [layer.cross_key_value(encoder_hidden.astype(self.dtype)) for layer in self.layers]
    zeros = tuple(jnp.zeros(shape, self.dtype) for _ in self.layers)
    return {"cross_k": tuple(k for k, _ in cross), "cross_v": tuple(v for _, v in cross),
            "self_k": zeros, "self_v": zeros}

  def __call__(self, tokens: Array, cache: Cache, index: Array | int) -> tuple[Array, Cache]:
    """Runs T new tokens at positions index .. index + T - 1.

    Args:
      tokens: [N, T] int32.
      cache: from `init_cache` (or a previous call).
      index: scalar int32 position of tokens[:, 0]; index + T <= T_max (not checked under jit).

    Returns:
      (hidden [N, T, D] after the final layer norm, updated cache).
    """
    t = tokens.shape[1]
    index = jnp.asarray(index, jnp.int32)
    pos = jax.lax.dynamic_slice_in_dim(self.embed_positions.embedding, index, t, axis=0)
    x = self.embed_tokens(tokens) + pos.astype(self.dtype)[None]
    self_k, self_v = [], []
    for i, layer in enumerate(self.layers):
      x, k, v = layer(x, cache["self_k"][i], cache["self_v"][i], cache["cross_k"][i],
                      cache["cross_v"][i], index)
      self_k.append(k)
      self_v.append(v)
    new = dict(cache, self_k=tuple(self_k), self_v=tuple(self_v))
    return self.layer_norm(x), new


class WhisperModel(nn.Module):
  """`encoder` + `decoder` (transformers' `WhisperModel`)."""
  config: WhisperConfig
  dtype: Dtype = jnp.float32

  def setup(self):
    self.encoder = WhisperEncoder(self.config, self.dtype)
    self.decoder = WhisperDecoder(self.config, self.dtype)


class WhisperForConditionalGeneration(nn.Module):
  """Whisper with its LM head, the computation of transformers' `WhisperForConditionalGeneration`.

  Params: `model` {encoder, decoder}, plus `proj_out` {kernel [D, V]} only when
  `config.tie_word_embeddings` is False. Methods (call with `model.apply(..., method=...)`):
  `encode`, `init_cache`, `decode`, `__call__` (full forward).
  """
  config: WhisperConfig
  dtype: Dtype = jnp.float32

  def setup(self):
    self.model = WhisperModel(self.config, self.dtype)
    if not self.config.tie_word_embeddings:
      self.proj_out = nn.Dense(self.config.vocab_size, use_bias=False, dtype=jnp.float32,
                               param_dtype=jnp.float32, kernel_init=_INIT)

  def encode(self, features: Array, allow_shorter: bool = False) -> dict[str, Array]:
    """features [B, T, M] -> {last_hidden_state [B, S, D], hidden_states [L+1, B, S, D]}
    (see `WhisperEncoder`)."""
    return self.model.encoder(features, allow_shorter)

  def init_cache(self, encoder_hidden: Array, max_length: int, group: int = 1) -> Cache:
    """See `WhisperDecoder.init_cache`."""
    return self.model.decoder.init_cache(encoder_hidden, max_length, group)

  def logits(self, hidden: Array) -> Array:
    """[N, T, D] decoder output -> float32 logits [N, T, V]."""
    h = hidden.astype(jnp.float32)
    if self.config.tie_word_embeddings:
      emb = self.model.decoder.embed_tokens.embedding
      return jnp.einsum("ntd,vd->ntv", h, emb.astype(jnp.float32))
    return self.proj_out(h)

  def decode(self, tokens: Array, cache: Cache, index: Array | int) -> tuple[Array, Cache]:
    """tokens [N, T] at positions index .. index + T - 1 -> (float32 logits [N, T, V], cache)."""
    hidden, cache = self.model.decoder(tokens, cache, index)
    return self.logits(hidden), cache

  def __call__(self, features: Array, decoder_input_ids: Array,
               allow_shorter: bool = False) -> dict[str, Array]:
    """Full forward (teacher forcing), as transformers' forward with `output_hidden_states`.

    Args:
      features: [B, T, M] log-mel frames (see `WhisperEncoder`).
      decoder_input_ids: [B, L] int32 decoder inputs (prompt + text), L <= max_target_positions.
      allow_shorter: see `WhisperEncoder`.

    Returns:
      dict with logits [B, L, V] float32 (causal: position l sees inputs 0 .. l),
      encoder_last_hidden_state [B, S, D], encoder_hidden_states [L_enc + 1, B, S, D].
    """
    enc = self.encode(features, allow_shorter)
    cache = self.init_cache(enc["last_hidden_state"], decoder_input_ids.shape[1])
    logits, _ = self.decode(decoder_input_ids, cache, 0)
    return {"logits": logits, "encoder_last_hidden_state": enc["last_hidden_state"],
            "encoder_hidden_states": enc["hidden_states"]}


def init_params(config: WhisperConfig, seed: int = 0) -> dict[str, Any]:
  """Random float32 params for tests and benchmarks (real ones come from the converter), filled
  with numpy from `param_shapes` (no XLA compile): kernels N(0, 1/fan_in), biases and embeddings
  N(0, 0.02^2), norms scale 1 / bias 0, encoder positions the sinusoids."""
  rng = np.random.RandomState(seed)

  def fill(path, leaf):
    names = [getattr(p, "key", str(p)) for p in path]
    name, parent = names[-1], names[-2] if len(names) > 1 else ""
    shape = leaf.shape
    if name == "kernel":
      return (rng.randn(*shape) / np.sqrt(np.prod(shape[:-1]))).astype(np.float32)
    if "layer_norm" in parent:
      return (np.ones if name == "scale" else np.zeros)(shape, np.float32)
    if name == "embedding" and names[-3:-1] == ["encoder", "embed_positions"]:
      return sinusoids(*shape)
    if name in ("bias", "embedding"):
      return (0.02 * rng.randn(*shape)).astype(np.float32)
    raise ValueError(f"init_params: no rule for param {'/'.join(names)}")

  return jax.tree_util.tree_map_with_path(fill, param_shapes(config))


@functools.lru_cache(maxsize=16)
def param_shapes(config: WhisperConfig) -> dict[str, Any]:
  """The params tree as `jax.ShapeDtypeStruct`s (no computation; cached, do not mutate)."""
  model = WhisperForConditionalGeneration(config)
  feats = jnp.zeros((1, 2, config.num_mel_bins), jnp.float32)
  tokens = jnp.zeros((1, 1), jnp.int32)
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), feats, tokens,
                                           allow_shorter=True))["params"]
