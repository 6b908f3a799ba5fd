"""Building blocks shared by the student encoders.

Conventions: inputs are `[B, T, D]` with `paddings [B, T]` where 1.0 marks padding. Every block
keeps padded frames at zero on output so that an utterance gives the same valid frames alone or
inside a padded batch.
"""

from __future__ import annotations

import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


def mask_frames(x: Array, paddings: Array) -> Array:
  """Zeros padded frames. x: [B, T, ...], paddings: [B, T]."""
  valid = (1.0 - paddings).astype(x.dtype)
  return x * valid.reshape(valid.shape + (1,) * (x.ndim - 2))


def rotary_embedding(x: Array, base: float = 10000.0) -> Array:
  """Rotary position embedding (RoFormer, Su et al. 2021) on the last axis.

  Args:
    x: [B, T, H, Dh] with Dh even.
  Returns:
    [B, T, H, Dh]: pairs (x[2i], x[2i+1]) rotated by angle t * base^(-2i/Dh).
  """
  dh = x.shape[-1]
  if dh % 2:
    raise ValueError(f"rotary embedding needs an even head dimension, got {dh}")
  t = jnp.arange(x.shape[1], dtype=jnp.float32)
  inv_freq = base ** (-jnp.arange(0, dh, 2, dtype=jnp.float32) / dh)
  angles = t[:, None] * inv_freq[None, :]  # [T, Dh/2]
  sin = jnp.sin(angles)[None, :, None, :].astype(x.dtype)
  cos = jnp.cos(angles)[None, :, None, :].astype(x.dtype)
  x1, x2 = x[..., 0::2], x[..., 1::2]
  out = jnp.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
  return out.reshape(x.shape)


def sinusoidal_positions(length: int, dim: int) -> Array:
  """Absolute sinusoidal positions (Vaswani et al. 2017): [length, dim]."""
  pos = jnp.arange(length, dtype=jnp.float32)[:, None]
  inv = jnp.exp(-math.log(10000.0) * jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)
  pe = jnp.zeros((length, dim), jnp.float32)
  pe = pe.at[:, 0::2].set(jnp.sin(pos * inv))
  pe = pe.at[:, 1::2].set(jnp.cos(pos * inv[: dim // 2]))
  return pe


class MultiHeadSelfAttention(nn.Module):
  """Scaled dot-product self-attention with key padding mask.

  Positions: 'rotary' rotates queries and keys (relative by construction); 'none' leaves them
  alone (use with absolute positions added to the input). Softmax statistics are float32.
  """
  num_heads: int
  dropout_rate: float = 0.0
  positions: str = "rotary"  # 'rotary' | 'none'
  causal: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, paddings: Array, *, train: bool) -> Array:
    """x: [B, T, D], paddings: [B, T] -> [B, T, D]."""
    d = x.shape[-1]
    if d % self.num_heads:
      raise ValueError(f"model dim {d} is not divisible by num_heads={self.num_heads}")
    dh = d // self.num_heads
    dense = lambda name: nn.DenseGeneral((self.num_heads, dh), dtype=self.dtype, name=name)
    q, k, v = dense("query")(x), dense("key")(x), dense("value")(x)  # [B, T, H, Dh]
    if self.positions == "rotary":
      q, k = rotary_embedding(q), rotary_embedding(k)
    elif self.positions != "none":
      raise ValueError(f"unknown attention positions {self.positions!r} (rotary | none)")
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / math.sqrt(dh)
    mask = (paddings[:, None, None, :] < 0.5)  # [B, 1, 1, Tk]
    if self.causal:
      t = x.shape[1]
      mask = mask & jnp.tril(jnp.ones((t, t), bool))[None, None]
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    probs = nn.Dropout(self.dropout_rate)(probs, deterministic=not train)
    ctx = jnp.einsum("bhqk,bkhd->bqhd", probs, v)
    return nn.DenseGeneral(d, axis=(-2, -1), dtype=self.dtype, name="out")(ctx)


class FeedForward(nn.Module):
  """Position-wise feed-forward: Dense(d*mult) -> activation -> dropout -> Dense(d)."""
  mult: int = 4
  dropout_rate: float = 0.0
  activation: Callable[[Array], Array] = nn.swish
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    d = x.shape[-1]
    h = self.activation(nn.Dense(d * self.mult, dtype=self.dtype, name="in")(x))
    h = nn.Dropout(self.dropout_rate)(h, deterministic=not train)
    return nn.Dense(d, dtype=self.dtype, name="out")(h)


class DepthwiseConv1D(nn.Module):
  """Depthwise 1-D convolution over time as K shifted multiply-adds: [B, T, D] -> [B, T, D].

  Same maths as `nn.Conv(D, (K,), feature_group_count=D)`, written as elementwise ops that
  XLA fuses into one loop; on XLA:CPU the grouped convolution measured ~5x slower forward.
  Centered ('SAME', odd K) or causal (left padding K-1) alignment.
  """
  kernel_size: int
  causal: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    k, d = self.kernel_size, x.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(in_axis=0, out_axis=()),
                        (k, d))
    bias = self.param("bias", nn.initializers.zeros, (d,))
    left = k - 1 if self.causal else (k - 1) // 2
    xp = jnp.pad(x, ((0, 0), (left, k - 1 - left), (0, 0)))
    t = x.shape[1]
    y = sum(xp[:, i:i + t] * kernel[i].astype(self.dtype) for i in range(k))
    return y + bias.astype(self.dtype)


def conv2d_patches(x: Array, stride: int = 2) -> Array:
  """3x3 patches with padding (1, 1): [B, T, F, C] -> [B, ceil(T/s), ceil(F/s), 9C].

  Explicit im2col from nine strided slices, so a 3x3 convolution becomes one matmul whose
  backward pass is a matmul too (XLA:CPU's Conv2D weight gradient is slow for small channels).
  """
  b, t, f, c = x.shape
  to, fo = -(-t // stride), -(-f // stride)
  xp = jnp.pad(x, ((0, 0), (1, 1 + stride * to - t), (1, 1 + stride * fo - f), (0, 0)))
  return jnp.concatenate([xp[:, i:i + stride * to:stride, j:j + stride * fo:stride]
                          for i in range(3) for j in range(3)], axis=-1)


class ConvModule(nn.Module):
  """Conformer convolution module (Gulati et al. 2020).

  LayerNorm -> pointwise conv (2d) + GLU -> depthwise conv (kernel k) -> norm -> swish ->
  pointwise conv -> dropout. The norm after the depthwise conv is a LayerNorm rather than the
  paper's BatchNorm: batch statistics would mix padded frames and make an utterance's output
  depend on its batch (and on the device split).
  """
  kernel_size: int = 15
  dropout_rate: float = 0.0
  causal: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, paddings: Array, *, train: bool) -> Array:
    d = x.shape[-1]
    h = nn.LayerNorm(dtype=self.dtype, name="ln")(x)
    h = nn.glu(nn.Dense(2 * d, dtype=self.dtype, name="pointwise_in")(h), axis=-1)
    h = mask_frames(h, paddings)
    h = DepthwiseConv1D(self.kernel_size, self.causal, self.dtype, name="depthwise")(h)
    h = nn.swish(nn.LayerNorm(dtype=self.dtype, name="ln_conv")(h))
    h = nn.Dense(d, dtype=self.dtype, name="pointwise_out")(h)
    return nn.Dropout(self.dropout_rate)(h, deterministic=not train)


class ConvSubsampling(nn.Module):
  """Convolutional front of the encoder: [B, T, F] -> [B, T/r, D] with r in {1, 2, 4, 8}.

  Each factor of 2 is a 3x3 Conv2D with stride 2 over (time, frequency) and ReLU; a final
  Dense maps channels*freq to the model dim. Padding (1, 1): output frame t covers input frames
  2t-1..2t+1 at each stage, and its padding flag is the input's at r*t, so an utterance of n
  valid frames has ceil(n/r) valid frames whether alone or inside a longer batch (padded
  features are 0).
  """
  model_dim: int
  factor: int = 4
  channels: int = 64
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, feats: Array, paddings: Array) -> tuple[Array, Array]:
    if self.factor not in (1, 2, 4, 8):
      raise ValueError(f"subsampling factor must be 1, 2, 4 or 8, got {self.factor}")
    h = mask_frames(feats, paddings)[..., None]  # [B, T, F, 1]
    n = int(math.log2(self.factor))
    for i in range(n):
      # Explicit (1, 1) padding (XLA's "SAME" with stride 2 pads on the left only for odd
      # lengths, which would shift the frame grid with the batch's padded length), as a
      # patches matmul: see `conv2d_patches`.
      h = nn.relu(nn.Dense(self.channels, dtype=self.dtype, name=f"conv{i}")(
          conv2d_patches(h)))
      paddings = paddings[:, ::2]
      h = mask_frames(h, paddings)
    b, t, f, c = h.shape
    h = nn.Dense(self.model_dim, dtype=self.dtype, name="proj")(h.reshape(b, t, f * c))
    return mask_frames(h, paddings), paddings
