"""wav2vec 2.0 with a CTC head in Flax linen: the frozen teacher.

A re-implementation of Hugging Face transformers' PyTorch `Wav2Vec2ForCTC` (transformers v5 ships no
Flax models), numerically exact in float32 to ~1e-5 in eval mode; the reference tests in
tests/models/test_wav2vec2.py check logits and every hidden state against transformers. Weights
come from `distill_jax.convert.hf_wav2vec2`.

Both architecture families are covered, selected by two config flags exactly as transformers does:

* `feat_extract_norm="layer"`, `do_stable_layer_norm=True` (large-lv60, large-robust, XLS-R): a
  layer norm after every feature-extractor conv, pre-LN transformer layers, the encoder layer norm
  after the last layer.
* `feat_extract_norm="group"`, `do_stable_layer_norm=False` (base, large non-lv60): a per-channel
  group norm after the first conv only, post-LN layers, the encoder layer norm before the layers.

Attention masks. transformers' model applies whatever mask it is given; what differs between the
families is the processor: `Wav2Vec2FeatureExtractor.return_attention_mask` is False for the
"group" models (they were trained without one; padded with zeros, the whole padded batch is
attended), True for the "layer" models. `Wav2Vec2Config.use_attention_mask` follows the
checkpoint's `preprocessor_config.json` when there is one, else `feat_extract_norm == "layer"`.
Without the mask, frames computed for a padded batch depend on the amount of padding (as in
transformers); `frame_paddings` still marks the padded frames for the losses.

Hidden states follow transformers 5.x `output_hidden_states=True`: entry 0 is the input of the
first transformer layer and entry i the output of layer i. For the stable-layer-norm family the
last entry is the output of the last layer *before* the encoder's final layer norm (transformers 5
captures layer outputs with hooks, `tie_last_hidden_states=False`; 4.x applied the norm). The
normed state that feeds the CTC head is returned separately as `last_hidden_state`.

On GPU/TPU, float32 matmuls may run at reduced precision by default (TF32, bf16 passes); wrap the
call in `jax.default_matmul_precision("highest")` when exactness to transformers matters there.

Training from scratch (`models/wav2vec2_trainee.py`, the demo teacher): the student's call contract
around `Wav2Vec2ForCTC`, with the same params tree, so a trained checkpoint exports to a
transformers folder as is. Its optional time masking is wav2vec2's SpecAugment
(`mask_time_prob`, `mask_time_length`, `mask_time_min_masks`): spans of feature-projection
frames replaced by the learned `masked_spec_embed`.

Not implemented (training-time only): LayerDrop, feature-axis masking (`mask_feature_prob` > 0
is an error when time masking is on), adapters (`add_adapter`, `adapter_attn_dim`: rejected by
the config).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


Array = jax.Array
Dtype = Any

SAMPLE_RATE = 16000

# HF `ACT2FN` names we support; "gelu" is the exact (erf) GELU.
_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}

# transformers config.json keys that change the architecture in a way this module does not cover,
# with the only value we accept.
_UNSUPPORTED = {"add_adapter": False, "adapter_attn_dim": None}


@dataclasses.dataclass(frozen=True)
class Wav2Vec2Config:
  """The fields of transformers' `Wav2Vec2Config` the model needs (same names and defaults).

  `do_normalize`, `use_attention_mask` and `sampling_rate` come from the processor's
  `preprocessor_config.json`, not from `config.json`. Every other `config.json` entry is kept in
  `extra` (not hashed or compared) so that export writes the same config back.
  """
  vocab_size: int = 32
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  hidden_act: str = "gelu"
  hidden_dropout: float = 0.1
  activation_dropout: float = 0.1
  attention_dropout: float = 0.1
  feat_proj_dropout: float = 0.0
  final_dropout: float = 0.1
  layerdrop: float = 0.1
  layer_norm_eps: float = 1e-5
  feat_extract_norm: str = "group"
  feat_extract_activation: str = "gelu"
  conv_dim: tuple[int, ...] = (512, 512, 512, 512, 512, 512, 512)
  conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
  conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
  conv_bias: bool = False
  num_conv_pos_embeddings: int = 128
  num_conv_pos_embedding_groups: int = 16
  do_stable_layer_norm: bool = False
  apply_spec_augment: bool = True
  mask_time_prob: float = 0.05
  mask_time_length: int = 10
  mask_time_min_masks: int = 2
  mask_feature_prob: float = 0.0
  pad_token_id: int | None = 0
  bos_token_id: int | None = 1
  eos_token_id: int | tuple[int, ...] | None = 2
  # Processor (preprocessor_config.json) settings.
  do_normalize: bool = True
  # None resolves to feat_extract_norm == "layer" (transformers' processor default for them).
  use_attention_mask: bool | None = None
  sampling_rate: int = SAMPLE_RATE
  extra: Mapping[str, Any] = dataclasses.field(
      default_factory=dict, hash=False, compare=False, repr=False)

  def __post_init__(self):
    for name in ("conv_dim", "conv_stride", "conv_kernel"):
      object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
    if self.use_attention_mask is None:
      object.__setattr__(self, "use_attention_mask", self.feat_extract_norm == "layer")
    if isinstance(self.eos_token_id, list):  # transformers allows a list; keep it hashable.
      object.__setattr__(self, "eos_token_id", tuple(self.eos_token_id))
    self.validate()

  # --- derived -----------------------------------------------------------------------------------
  @property
  def attention_mask(self) -> bool:
    """Whether padded frames are masked (see the module docstring)."""
    return bool(self.use_attention_mask)

  @property
  def has_masked_spec_embed(self) -> bool:
    """transformers creates `wav2vec2.masked_spec_embed` only when a SpecAugment prob is > 0."""
    return self.mask_time_prob > 0.0 or self.mask_feature_prob > 0.0

  @property
  def frame_rate_samples(self) -> int:
    """Hop of the feature extractor in samples (320 = 20 ms at 16 kHz for the usual config)."""
    return int(np.prod(self.conv_stride))

  def validate(self) -> None:
    """Raises ValueError naming the offending field."""
    if self.feat_extract_norm not in ("group", "layer"):
      raise ValueError(
          f"feat_extract_norm={self.feat_extract_norm!r}: must be 'group' or 'layer'")
    for name in ("hidden_act", "feat_extract_activation"):
      if getattr(self, name) not in _ACTIVATIONS:
        raise ValueError(f"{name}={getattr(self, name)!r}: supported are {sorted(_ACTIVATIONS)}")
    if not len(self.conv_dim) == len(self.conv_stride) == len(self.conv_kernel):
      raise ValueError(
          f"conv_dim/conv_stride/conv_kernel lengths differ: {len(self.conv_dim)}, "
          f"{len(self.conv_stride)}, {len(self.conv_kernel)}")
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(f"hidden_size={self.hidden_size} is not divisible by "
                       f"num_attention_heads={self.num_attention_heads}")
    if self.hidden_size % self.num_conv_pos_embedding_groups:
      raise ValueError(f"hidden_size={self.hidden_size} is not divisible by "
                       f"num_conv_pos_embedding_groups={self.num_conv_pos_embedding_groups}")
    if self.vocab_size is None or self.vocab_size <= 0:
      raise ValueError(f"vocab_size={self.vocab_size!r}: a CTC head needs a vocabulary size")

  # --- transformers config.json ------------------------------------------------------------------
  @classmethod
  def from_hf_dict(cls, hf: Mapping[str, Any],
                   preprocessor: Mapping[str, Any] | None = None) -> "Wav2Vec2Config":
    """Builds the config from a transformers `config.json` dict (+ `preprocessor_config.json`)."""
    hf = dict(hf)
    model_type = hf.get("model_type", "wav2vec2")
    if model_type != "wav2vec2":
      raise ValueError(f"config.json: model_type={model_type!r}, expected 'wav2vec2'")
    for key, ok in _UNSUPPORTED.items():
      if hf.get(key, ok) != ok:
        raise ValueError(f"config.json: {key}={hf[key]!r} is not supported (expected {ok!r})")
    if "num_feat_extract_layers" in hf and "conv_dim" in hf and (
        hf["num_feat_extract_layers"] != len(hf["conv_dim"])):
      raise ValueError(f"config.json: num_feat_extract_layers={hf['num_feat_extract_layers']} but "
                       f"conv_dim has {len(hf['conv_dim'])} entries")
    model_fields = {f.name for f in dataclasses.fields(cls)} - {
        "do_normalize", "use_attention_mask", "sampling_rate", "extra"}
    kwargs = {k: hf.pop(k) for k in list(hf) if k in model_fields}
    for derived in ("model_type", "architectures", "num_feat_extract_layers"):
      hf.pop(derived, None)  # Written back by `to_hf_dict`.
    if preprocessor is not None:
      kwargs["do_normalize"] = bool(preprocessor.get("do_normalize", True))
      kwargs["use_attention_mask"] = bool(preprocessor.get("return_attention_mask", False))
      kwargs["sampling_rate"] = int(preprocessor.get("sampling_rate", SAMPLE_RATE))
    return cls(**kwargs, extra=hf)

  def to_hf_dict(self) -> dict[str, Any]:
    """The transformers `config.json` dict (with `extra` entries kept as loaded)."""
    out = dict(self.extra)
    for f in dataclasses.fields(self):
      if f.name in ("do_normalize", "use_attention_mask", "sampling_rate", "extra"):
        continue
      v = getattr(self, f.name)
      out[f.name] = list(v) if isinstance(v, tuple) else v
    out["num_feat_extract_layers"] = len(self.conv_dim)
    out["model_type"] = "wav2vec2"
    out["architectures"] = ["Wav2Vec2ForCTC"]
    return out

  def preprocessor_dict(self) -> dict[str, Any]:
    """The `preprocessor_config.json` dict for `Wav2Vec2FeatureExtractor`."""
    return {
        "feature_extractor_type": "Wav2Vec2FeatureExtractor",
        "feature_size": 1,
        "padding_side": "right",
        "padding_value": 0.0,
        "do_normalize": self.do_normalize,
        "return_attention_mask": self.attention_mask,
        "sampling_rate": self.sampling_rate,
        "processor_class": "Wav2Vec2Processor",
    }

  @classmethod
  def from_folder(cls, folder: str) -> "Wav2Vec2Config":
    """Reads `config.json` (+ `preprocessor_config.json` if present) from a folder."""
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{folder}: no config.json")
    with open(path, encoding="utf-8") as f:
      hf = json.load(f)
    pre = None
    pre_path = os.path.join(folder, "preprocessor_config.json")
    if os.path.isfile(pre_path):
      with open(pre_path, encoding="utf-8") as f:
        pre = json.load(f)
    return cls.from_hf_dict(hf, pre)


# --- input handling ------------------------------------------------------------------------------

def normalize_waveform(waveform: Array, paddings: Array, eps: float = 1e-7) -> Array:
  """Zero-mean unit-variance normalization per utterance, over its valid samples.

  What `Wav2Vec2FeatureExtractor(do_normalize=True)` does before the model (the model itself
  does not normalize): `(x - mean) / sqrt(var + 1e-7)` with the biased variance, padded samples set
  to 0. It matches the feature extractor for unpadded input and for padded input with
  `return_attention_mask=True`. (For a padded batch with `return_attention_mask=False`, the
  base-model default, the feature extractor takes the statistics over the padded zeros too, which
  makes an utterance's input depend on its batch; we do not copy that.) Jittable.

  Args:
    waveform: [B, S] float audio at 16 kHz.
    paddings: [B, S], 1.0 marks padding.
    eps: variance floor, 1e-7 as in transformers.

  Returns:
    [B, S] float32, normalized, zeros at padded samples.
  """
  x = jnp.asarray(waveform, jnp.float32)
  valid = 1.0 - jnp.asarray(paddings, jnp.float32)
  n = jnp.maximum(jnp.sum(valid, axis=-1, keepdims=True), 1.0)
  mean = jnp.sum(x * valid, axis=-1, keepdims=True) / n
  var = jnp.sum(jnp.square((x - mean) * valid), axis=-1, keepdims=True) / n
  return (x - mean) * jax.lax.rsqrt(var + eps) * valid


def conv_output_lengths(config: Wav2Vec2Config, lengths: Array) -> Array:
  """Frames after the feature extractor for `lengths` samples (the Conv1d length formula).

  Args:
    config: model config.
    lengths: [B] int sample counts.

  Returns:
    [B] int32 frame counts, clamped at 0 for inputs shorter than the receptive field (400
    samples). transformers computes a negative length there and its frame mask then marks
    every frame valid; such utterances should be filtered out upstream anyway.
  """
  lengths = jnp.asarray(lengths, jnp.int32)
  for k, s in zip(config.conv_kernel, config.conv_stride):
    lengths = (lengths - k) // s + 1
  return jnp.maximum(lengths, 0)


def num_frames(config: Wav2Vec2Config, num_samples: int) -> int:
  """Static frame count for a padded length of `num_samples` samples."""
  n = int(num_samples)
  for k, s in zip(config.conv_kernel, config.conv_stride):
    n = (n - k) // s + 1
  return max(n, 0)


def frame_paddings_from_paddings(config: Wav2Vec2Config, paddings: Array) -> Array:
  """Frame paddings [B, T] (1.0 = padding) from sample paddings [B, S] (right padding)."""
  lengths = jnp.sum(jnp.round(1.0 - paddings), axis=-1).astype(jnp.int32)
  frame_lengths = conv_output_lengths(config, lengths)
  t = num_frames(config, paddings.shape[-1])
  return (jnp.arange(t)[None, :] >= frame_lengths[:, None]).astype(jnp.float32)


def time_mask(rng: Array, frame_paddings: Array, prob: float, length: int,
              min_masks: int = 2) -> Array:
  """wav2vec2's SpecAugment time mask (transformers `_compute_mask_indices`, jittable).

  Each utterance with n valid frames gets `max(min_masks, floor(prob * n / length + u))` spans
  (u ~ U[0, 1), so the expected masked share is about `prob` before overlaps), capped at
  n // length, of `length` frames, starting uniformly in [0, n - length]; spans may overlap. One
  difference from transformers: starts are drawn with replacement (it draws distinct starts).
  Utterances shorter than `length` frames are not masked.

  Args:
    rng: PRNG key.
    frame_paddings: [B, T], 1.0 marks padded frames.
    prob, length, min_masks: `mask_time_prob`, `mask_time_length`, `mask_time_min_masks`.

  Returns:
    [B, T] bool, True where the frame is replaced by `masked_spec_embed`; never a padded frame.
  """
  b, t = frame_paddings.shape
  n = jnp.sum(frame_paddings < 0.5, axis=1).astype(jnp.int32)
  max_spans = max(int(min_masks), int(prob * t / length + 1.0), 1)
  k_num, k_start = jax.random.split(rng)
  u = jax.random.uniform(k_num, (b,))
  spans = jnp.floor(prob * n.astype(jnp.float32) / length + u).astype(jnp.int32)
  spans = jnp.minimum(jnp.maximum(spans, min_masks), n // length)
  room = jnp.maximum(n - length + 1, 1)
  starts = jnp.floor(jax.random.uniform(k_start, (b, max_spans)) * room[:, None])
  starts = starts.astype(jnp.int32)
  used = jnp.arange(max_spans)[None, :] < spans[:, None]  # [B, M]
  pos = jnp.arange(t)[None, None, :]  # [1, 1, T]
  inside = (pos >= starts[..., None]) & (pos < starts[..., None] + length) & used[..., None]
  return jnp.any(inside, axis=1) & (frame_paddings < 0.5)


# --- modules -------------------------------------------------------------------------------------

def _layer_norm(eps: float, dtype: Dtype, name: str) -> nn.LayerNorm:
  # Two-pass variance, as torch.nn.LayerNorm; statistics in float32 whatever `dtype`.
  return nn.LayerNorm(epsilon=eps, dtype=dtype, param_dtype=jnp.float32,
                      use_fast_variance=False, name=name)


class _ConvLayer(nn.Module):
  """One feature-extractor conv: Conv1d (VALID) -> [layer norm | group norm | none] -> act.

  Params: `conv` {kernel [K, Cin, Cout], bias [Cout]}; `layer_norm` {scale, bias} [Cout].
  """
  config: Wav2Vec2Config
  layer_id: int
  norm: str | None  # "layer", "group" or None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """[B, S, Cin] -> [B, S', Cout]."""
    cfg, i = self.config, self.layer_id
    x = nn.Conv(cfg.conv_dim[i], kernel_size=(cfg.conv_kernel[i],), strides=(cfg.conv_stride[i],),
                padding="VALID", use_bias=cfg.conv_bias, dtype=self.dtype,
                param_dtype=jnp.float32, name="conv")(x)
    if self.norm == "layer":  # torch LayerNorm's default eps, not config.layer_norm_eps.
      x = _layer_norm(1e-5, self.dtype, "layer_norm")(x)
    elif self.norm == "group":
      x = _ChannelNorm(self.dtype, name="layer_norm")(x)
    return _ACTIVATIONS[cfg.feat_extract_activation](x)


class _ChannelNorm(nn.Module):
  """torch `GroupNorm(num_groups=C, num_channels=C)`: each channel over all time steps.

  Statistics over the whole (padded) length, as in transformers. Params `scale`, `bias` [C].
  """
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """[B, T, C] -> [B, T, C]."""
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=1, keepdims=True)
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],), jnp.float32)
    return ((x32 - mean) * jax.lax.rsqrt(var + 1e-5) * scale + bias).astype(self.dtype)


class FeatureEncoder(nn.Module):
  """Waveform [B, S] -> conv features [B, T, C]; params `conv_layers_{i}`."""
  config: Wav2Vec2Config
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, waveform: Array) -> Array:
    cfg = self.config
    x = waveform[..., None].astype(self.dtype)
    for i in range(len(cfg.conv_dim)):
      if cfg.feat_extract_norm == "layer":
        norm = "layer"
      else:
        norm = "group" if i == 0 else None
      x = _ConvLayer(cfg, i, norm, self.dtype, name=f"conv_layers_{i}")(x)
    return x


class PositionalConvEmbedding(nn.Module):
  """Grouped Conv1d with weight norm over the kernel axis (torch `weight_norm(dim=2)`) + act.

  Params (`conv`): `weight_g` [K], `weight_v` [K, D/G, D], `bias` [D]. The effective kernel is
  `weight_v * weight_g / ||weight_v||`, the norm taken over the in/out axes per kernel tap.
  Padding K//2 on both sides; for an even K the last output frame is dropped (SamePadLayer).
  """
  config: Wav2Vec2Config
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """[B, T, D] -> [B, T, D]."""
    cfg = self.config
    k, g, d = cfg.num_conv_pos_embeddings, cfg.num_conv_pos_embedding_groups, cfg.hidden_size
    conv = _WeightNormConvParams(k, d // g, d, name="conv")
    weight_g, weight_v, bias = conv()
    norm = jnp.sqrt(jnp.sum(jnp.square(weight_v), axis=(1, 2)))
    kernel = weight_v * (weight_g / norm)[:, None, None]
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), kernel.astype(self.dtype), window_strides=(1,),
        padding=[(k // 2, k // 2)], dimension_numbers=("NWC", "WIO", "NWC"),
        feature_group_count=g)
    y = y + bias.astype(self.dtype)
    if k % 2 == 0:
      y = y[:, :-1]
    return _ACTIVATIONS[cfg.feat_extract_activation](y)


class _WeightNormConvParams(nn.Module):
  """Parameter holder of the positional conv: (weight_g [K], weight_v [K, I, O], bias [O])."""
  kernel_size: int
  in_per_group: int
  features: int

  @nn.compact
  def __call__(self) -> tuple[Array, Array, Array]:
    k, i, o = self.kernel_size, self.in_per_group, self.features
    std = 2.0 * float(np.sqrt(1.0 / (k * i)))
    weight_v = self.param("weight_v", nn.initializers.normal(std), (k, i, o), jnp.float32)
    weight_g = self.param(
        "weight_g", lambda _, v: jnp.sqrt(jnp.sum(jnp.square(v), axis=(1, 2))), weight_v)
    bias = self.param("bias", nn.initializers.zeros, (o,), jnp.float32)
    return weight_g, weight_v, bias


class Attention(nn.Module):
  """Multi-head self-attention; params `{q,k,v,out}_proj` {kernel [D, D], bias [D]}."""
  config: Wav2Vec2Config
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, key_valid: Array | None, deterministic: bool) -> Array:
    """x [B, T, D], key_valid [B, T] bool or None -> [B, T, D]."""
    cfg = self.config
    b, t, d = x.shape
    h = cfg.num_attention_heads
    hd = d // h
    dense = functools.partial(nn.Dense, d, dtype=self.dtype, param_dtype=jnp.float32)
    q = dense(name="q_proj")(x).reshape(b, t, h, hd)
    k = dense(name="k_proj")(x).reshape(b, t, h, hd)
    v = dense(name="v_proj")(x).reshape(b, t, h, hd)
    q = q * jnp.asarray(hd ** -0.5, self.dtype)
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    if key_valid is not None:
      scores = jnp.where(key_valid[:, None, None, :], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1)
    if not deterministic and cfg.attention_dropout > 0:
      probs = nn.Dropout(cfg.attention_dropout)(probs, deterministic=False)
    out = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(self.dtype), v).reshape(b, t, d)
    return dense(name="out_proj")(out)


class FeedForward(nn.Module):
  """Dense -> act -> Dense; params `intermediate_dense`, `output_dense`."""
  config: Wav2Vec2Config
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, deterministic: bool) -> Array:
    cfg = self.config
    y = nn.Dense(cfg.intermediate_size, dtype=self.dtype, param_dtype=jnp.float32,
                 name="intermediate_dense")(x)
    y = _ACTIVATIONS[cfg.hidden_act](y)
    y = nn.Dropout(cfg.activation_dropout)(y, deterministic=deterministic)
    y = nn.Dense(cfg.hidden_size, dtype=self.dtype, param_dtype=jnp.float32,
                 name="output_dense")(y)
    return nn.Dropout(cfg.hidden_dropout)(y, deterministic=deterministic)


class EncoderLayer(nn.Module):
  """Transformer layer, post-LN (`do_stable_layer_norm=False`) or pre-LN (True).

  Params: `attention`, `layer_norm`, `feed_forward`, `final_layer_norm`.
  """
  config: Wav2Vec2Config
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, key_valid: Array | None, deterministic: bool) -> Array:
    """[B, T, D] -> [B, T, D]."""
    cfg = self.config
    attn = Attention(cfg, self.dtype, name="attention")
    ln1 = _layer_norm(cfg.layer_norm_eps, self.dtype, "layer_norm")
    ffn = FeedForward(cfg, self.dtype, name="feed_forward")
    ln2 = _layer_norm(cfg.layer_norm_eps, self.dtype, "final_layer_norm")
    drop = nn.Dropout(cfg.hidden_dropout)
    if cfg.do_stable_layer_norm:
      x = x + drop(attn(ln1(x), key_valid, deterministic), deterministic=deterministic)
      return x + ffn(ln2(x), deterministic)
    x = ln1(x + drop(attn(x, key_valid, deterministic), deterministic=deterministic))
    return ln2(x + ffn(x, deterministic))


class Encoder(nn.Module):
  """Positional conv + transformer layers; params `pos_conv_embed`, `layer_norm`, `layers_{i}`."""
  config: Wav2Vec2Config
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, frame_valid: Array | None,
               deterministic: bool) -> tuple[Array, list[Array]]:
    """x [B, T, D], frame_valid [B, T] bool or None -> (last_hidden_state, hidden states)."""
    cfg = self.config
    if frame_valid is not None:
      x = jnp.where(frame_valid[..., None], x, jnp.zeros((), x.dtype))
    x = x + PositionalConvEmbedding(cfg, self.dtype, name="pos_conv_embed")(x)
    final_ln = _layer_norm(cfg.layer_norm_eps, self.dtype, "layer_norm")
    if not cfg.do_stable_layer_norm:
      x = final_ln(x)
    x = nn.Dropout(cfg.hidden_dropout)(x, deterministic=deterministic)
    states = [x]
    for i in range(cfg.num_hidden_layers):
      x = EncoderLayer(cfg, self.dtype, name=f"layers_{i}")(x, frame_valid, deterministic)
      states.append(x)
    if cfg.do_stable_layer_norm:
      x = final_ln(x)
    return x, states


class Wav2Vec2Model(nn.Module):
  """Feature encoder + projection + transformer encoder (transformers' `Wav2Vec2Model`).

  Params: `feature_extractor`, `feature_projection` {layer_norm, projection}, `encoder`, and
  `masked_spec_embed` [D] when `config.has_masked_spec_embed` (used by time masking only).
  """
  config: Wav2Vec2Config
  dtype: Dtype = jnp.float32
  time_masking: bool = False  # when not deterministic: SpecAugment time masks (rng 'specaug')

  @nn.compact
  def __call__(self, waveform: Array, paddings: Array, deterministic: bool = True
               ) -> tuple[Array, list[Array], Array]:
    """waveform, paddings [B, S] -> (last_hidden [B, T, D], L+1 x [B, T, D], frame_paddings)."""
    cfg = self.config
    embed = None
    if cfg.has_masked_spec_embed:
      embed = self.param("masked_spec_embed", nn.initializers.uniform(1.0), (cfg.hidden_size,),
                         jnp.float32)
    paddings = jnp.asarray(paddings, jnp.float32)
    # Padded samples are zeros, as the processor pads them (matters only without attention mask).
    waveform = jnp.asarray(waveform, jnp.float32) * (1.0 - paddings)
    feats = FeatureEncoder(cfg, self.dtype, name="feature_extractor")(waveform)
    frame_paddings = frame_paddings_from_paddings(cfg, paddings)
    with_mask = cfg.attention_mask
    frame_valid = frame_paddings < 0.5 if with_mask else None
    proj = _FeatureProjection(cfg, self.dtype, name="feature_projection")
    x = proj(feats, deterministic)
    if self.time_masking and not deterministic and cfg.apply_spec_augment and (
        cfg.mask_time_prob > 0):
      if cfg.mask_feature_prob > 0:
        raise ValueError(f"mask_feature_prob={cfg.mask_feature_prob}: feature-axis masking is "
                         "not implemented; set it to 0 to train with time masking")
      mask = time_mask(self.make_rng("specaug"), frame_paddings, cfg.mask_time_prob,
                       cfg.mask_time_length, cfg.mask_time_min_masks)
      x = jnp.where(mask[..., None], embed.astype(x.dtype), x)
    last, states = Encoder(cfg, self.dtype, name="encoder")(x, frame_valid, deterministic)
    return last, states, frame_paddings


class _FeatureProjection(nn.Module):
  """LayerNorm(C) -> Dense(D) -> dropout; params `layer_norm`, `projection`."""
  config: Wav2Vec2Config
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, deterministic: bool) -> Array:
    cfg = self.config
    x = _layer_norm(cfg.layer_norm_eps, self.dtype, "layer_norm")(x)
    x = nn.Dense(cfg.hidden_size, dtype=self.dtype, param_dtype=jnp.float32,
                 name="projection")(x)
    return nn.Dropout(cfg.feat_proj_dropout)(x, deterministic=deterministic)


class Wav2Vec2ForCTC(nn.Module):
  """wav2vec 2.0 + linear CTC head, the same computation as transformers' `Wav2Vec2ForCTC`.

  Params mirror the transformers state dict: `wav2vec2` {...}, `lm_head` {kernel [D, V], bias}.
  Params are float32; `dtype` is the compute dtype (e.g. jnp.bfloat16): matmuls and activations
  run in it, layer-norm statistics, attention softmax and the logits in float32.

  Attributes:
    config: architecture.
    dtype: compute dtype.
    time_masking: apply wav2vec2's SpecAugment time masks when not deterministic (needs the
      `specaug` RNG; see `time_mask`). Off by default: a frozen teacher never masks.
  """
  config: Wav2Vec2Config
  dtype: Dtype = jnp.float32
  time_masking: bool = False

  @nn.compact
  def __call__(self, waveform: Array, paddings: Array, deterministic: bool = True
               ) -> dict[str, Array]:
    """Runs the model on a padded batch.

    Args:
      waveform: [B, S] float32 audio at 16 kHz, already normalized if `config.do_normalize`
        (see `normalize_waveform`; the model does not normalize, as in transformers). Padded
        samples are set to zero here, as the transformers processor pads.
      paddings: [B, S], 1.0 marks padding (right-padded; the valid length is the count of 0s).
      deterministic: False enables dropout (needs the `dropout` RNG).

    Returns:
      dict with
        logits: [B, T, V] float32 CTC logits (blank = `<pad>` = 0).
        hidden_states: [L+1, B, T, D] in the compute dtype: the input of the first transformer
          layer, then each layer's output (transformers 5.x `output_hidden_states`).
        last_hidden_state: [B, T, D], what the CTC head reads (= hidden_states[-1] for the
          post-LN family; the final layer norm of it for the stable-layer-norm family).
        frame_paddings: [B, T] float32, 1.0 marks padded frames. Values at padded frames are
          unspecified (as in transformers): mask them.
    """
    cfg = self.config
    last, states, frame_paddings = Wav2Vec2Model(cfg, self.dtype, self.time_masking,
                                                 name="wav2vec2")(waveform, paddings,
                                                                  deterministic)
    h = nn.Dropout(cfg.final_dropout)(last, deterministic=deterministic)
    logits = nn.Dense(cfg.vocab_size, dtype=jnp.float32, param_dtype=jnp.float32,
                      name="lm_head")(h.astype(jnp.float32))
    return {
        "logits": logits,
        "hidden_states": jnp.stack(states),
        "last_hidden_state": last,
        "frame_paddings": frame_paddings,
    }


def init_params(config: Wav2Vec2Config, seed: int = 0) -> dict[str, Any]:
  """Random float32 params for tests and benchmarks (real ones come from the converter).

  Filled with numpy from the shapes of `param_shapes` (compiling the Flax initializers takes
  ~15 s of XLA time for the threefry calls): kernels N(0, 1/fan_in), biases N(0, 0.02^2),
  norms scale 1 / bias 0, `weight_g` = the norm of `weight_v` (identity reparametrization).
  """
  rng = np.random.RandomState(seed)

  def fill(path, leaf):
    name = path[-1].key
    parent = path[-2].key if len(path) > 1 else ""
    shape = leaf.shape
    if name in ("kernel", "weight_v"):
      return (rng.randn(*shape) / np.sqrt(np.prod(shape[:-1]))).astype(np.float32)
    if name == "scale":
      return np.ones(shape, np.float32)
    if name == "bias":
      if "norm" in parent:
        return np.zeros(shape, np.float32)
      return (0.02 * rng.randn(*shape)).astype(np.float32)
    if name == "masked_spec_embed":
      return rng.uniform(size=shape).astype(np.float32)
    if name == "weight_g":
      return np.ones(shape, np.float32)  # replaced below
    raise ValueError(f"init_params: no rule for param {jax.tree_util.keystr(path)}")

  params = jax.tree_util.tree_map_with_path(fill, param_shapes(config))
  conv = params["wav2vec2"]["encoder"]["pos_conv_embed"]["conv"]
  conv["weight_g"] = np.sqrt(np.sum(np.square(conv["weight_v"]), axis=(1, 2))).astype(np.float32)
  return params


@functools.lru_cache(maxsize=16)
def param_shapes(config: Wav2Vec2Config) -> dict[str, Any]:
  """The params tree as `jax.ShapeDtypeStruct`s (no computation; cached, do not mutate)."""
  model = Wav2Vec2ForCTC(config)
  n = max(16000, 2 * config.frame_rate_samples + sum(config.conv_kernel))
  x = jax.ShapeDtypeStruct((1, n), jnp.float32)
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(x.shape),
                                           jnp.zeros(x.shape)))["params"]
