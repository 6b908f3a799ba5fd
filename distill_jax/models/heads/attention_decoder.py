"""Autoregressive attention decoders over the student encoder (sequence-to-sequence head).

Two decoders share one interface, and each offers two attention mechanisms over the encoder
frames ("memory", [B, T, Dm] with paddings [B, T]):

  * 'additive' (Bahdanau et al. 2015): e[u, t] = v^T tanh(W1 q_u + W2 k_t), a = softmax_t(e);
  * 'dot' (Vaswani et al. 2017): multi-head softmax(Q K^T / sqrt(dh)) V.

Decoders:
  * `LstmDecoder` (LAS-style, Chan et al. 2016 / Luong et al. 2015): the embedded previous token
    and the previous attentional vector feed stacked LSTMs; the top LSTM state queries the
    memory; the attentional vector tanh(W [h; context]) gives the logits.
  * `TransformerDecoder`: pre-LN layers of causal self-attention, cross-attention and FFN over
    token embeddings plus absolute sinusoidal positions.

Interface (both):
  __call__(memory [B, T, Dm], memory_paddings [B, T], inputs [B, U] int, *, train)
      -> logits [B, U, V]       (teacher forcing: inputs = <s> y_1 .. y_{U-1})
  init_state(memory, max_length) -> state pytree with leading axis B
  step(state, memory, memory_paddings, tokens [B] int, position scalar int)
      -> (logits [B, V], state)  (incremental decoding; the Transformer keeps a key/value cache
                                  of `max_length` positions)

Teacher forcing and incremental decoding give the same logits (tests/models/heads).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from distill_jax.models import layers

Array = jax.Array

ATTENTION_KINDS = ("additive", "dot")
DECODER_KINDS = ("lstm", "transformer")


def _masked_softmax(logits: Array, key_valid: Array) -> Array:
  """Softmax over the last axis in float32 with invalid keys excluded."""
  logits = jnp.where(key_valid, logits.astype(jnp.float32), jnp.finfo(jnp.float32).min)
  return jax.nn.softmax(logits, axis=-1)


class CrossAttention(nn.Module):
  """Attention of decoder queries over encoder frames.

  queries [B, U, Dq], memory [B, T, Dm], memory_paddings [B, T] -> (context [B, U, Dq],
  weights [B, U, T] (averaged over heads for 'dot')). Padded frames get zero weight.
  """
  kind: str = "dot"
  num_heads: int = 4
  attention_dim: int = 0  # additive: width of the tanh layer (0 = query width)

  @nn.compact
  def __call__(self, queries: Array, memory: Array, memory_paddings: Array) -> tuple[Array, Array]:
    dq = queries.shape[-1]
    key_valid = (memory_paddings < 0.5)[:, None, :]  # [B, 1, T]
    if self.kind == "additive":
      a = self.attention_dim or dq
      wq = nn.Dense(a, use_bias=False, name="w_query")(queries)      # W1 q  [B, U, A]
      wk = nn.Dense(a, name="w_key")(memory)                           # W2 k  [B, T, A]
      v = self.param("v", nn.initializers.lecun_normal(), (a, 1))[:, 0]
      scores = jnp.einsum("buta,a->but", jnp.tanh(wq[:, :, None] + wk[:, None]), v)
      weights = _masked_softmax(scores, key_valid)                    # [B, U, T]
      context = jnp.einsum("but,btd->bud", weights.astype(memory.dtype), memory)
      return nn.Dense(dq, name="out")(context), weights
    if self.kind != "dot":
      raise ValueError(f"attention kind {self.kind!r} is not one of {ATTENTION_KINDS}")
    if dq % self.num_heads:
      raise ValueError(f"decoder dim {dq} is not divisible by num_heads={self.num_heads}")
    dh = dq // self.num_heads
    dense = lambda name: nn.DenseGeneral((self.num_heads, dh), name=name)
    q, k, v = dense("query")(queries), dense("key")(memory), dense("value")(memory)
    scores = jnp.einsum("buhd,bthd->bhut", q, k) / math.sqrt(dh)
    weights = _masked_softmax(scores, key_valid[:, None])              # [B, H, U, T]
    context = jnp.einsum("bhut,bthd->buhd", weights.astype(v.dtype), v)
    out = nn.DenseGeneral(dq, axis=(-2, -1), name="out")(context)
    return out, jnp.mean(weights, axis=1)


# --------------------------------------------------------------------------------------------
# LSTM decoder.
# --------------------------------------------------------------------------------------------


class _LstmStep(nn.Module):
  """One LSTM decoding step: (carry, token [B]) -> (carry, logits [B, V])."""
  vocab_size: int
  dim: int
  num_layers: int
  attention: str
  num_heads: int
  dropout_rate: float

  @nn.compact
  def __call__(self, carry: dict, tokens: Array, memory: Array, memory_paddings: Array,
               train: bool) -> tuple[dict, Array]:
    emb = nn.Embed(self.vocab_size, self.dim, name="embed")(tokens)
    x = jnp.concatenate([emb, carry["feed"]], axis=-1)  # input feeding (Luong et al. 2015)
    lstm = []
    for i in range(self.num_layers):
      c, x = nn.OptimizedLSTMCell(self.dim, name=f"lstm{i}")(carry["lstm"][i], x)
      lstm.append(c)
      x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    context, _ = CrossAttention(self.attention, self.num_heads, name="attention")(
        x[:, None], memory, memory_paddings)
    feed = jnp.tanh(nn.Dense(self.dim, name="combine")(
        jnp.concatenate([x, context[:, 0]], axis=-1)))
    h = nn.Dropout(self.dropout_rate)(feed, deterministic=not train)
    logits = nn.Dense(self.vocab_size, dtype=jnp.float32, name="logits")(h)
    return dict(lstm=tuple(lstm), feed=feed), logits


class LstmDecoder(nn.Module):
  """LSTM attention decoder (see module docstring). State: LSTM carries and the fed vector."""
  vocab_size: int
  dim: int = 256
  num_layers: int = 1
  attention: str = "additive"
  num_heads: int = 1
  dropout_rate: float = 0.0

  def setup(self):
    if self.attention not in ATTENTION_KINDS:
      raise ValueError(f"attention {self.attention!r} is not one of {ATTENTION_KINDS}")
    self.cell = _LstmStep(self.vocab_size, self.dim, self.num_layers, self.attention,
                          self.num_heads, self.dropout_rate)

  def init_state(self, memory: Array, max_length: int = 0) -> dict:
    del max_length
    b = memory.shape[0]
    zeros = jnp.zeros((b, self.dim), jnp.float32)
    return dict(lstm=tuple((zeros, zeros) for _ in range(self.num_layers)), feed=zeros)

  def __call__(self, memory: Array, memory_paddings: Array, inputs: Array, *,
               train: bool) -> Array:
    scan = nn.scan(lambda cell, carry, tok, mem, pad: cell(carry, tok, mem, pad, train),
                   variable_broadcast="params", split_rngs={"params": False, "dropout": True},
                   in_axes=(1, nn.broadcast, nn.broadcast), out_axes=1)
    _, logits = scan(self.cell, self.init_state(memory), inputs, memory, memory_paddings)
    return logits

  def step(self, state: dict, memory: Array, memory_paddings: Array, tokens: Array,
           position: Array) -> tuple[Array, dict]:
    del position
    state, logits = self.cell(state, tokens, memory, memory_paddings, False)
    return logits, state


# --------------------------------------------------------------------------------------------
# Transformer decoder.
# --------------------------------------------------------------------------------------------


class _CausalSelfAttention(nn.Module):
  """Causal multi-head self-attention; with a cache, one new position at a time.

  x [B, U, D] -> [B, U, D] (cache None), or x [B, 1, D] with cache dict(key, value
  [B, L, H, Dh]) and `position` -> ([B, 1, D], updated cache).
  """
  num_heads: int

  @nn.compact
  def __call__(self, x: Array, cache: dict | None = None,
               position: Array | None = None) -> tuple[Array, dict | None]:
    d = x.shape[-1]
    if d % self.num_heads:
      raise ValueError(f"decoder dim {d} is not divisible by num_heads={self.num_heads}")
    dh = d // self.num_heads
    dense = lambda name: nn.DenseGeneral((self.num_heads, dh), name=name)
    q, k, v = dense("query")(x), dense("key")(x), dense("value")(x)
    if cache is None:
      u = x.shape[1]
      mask = jnp.tril(jnp.ones((u, u), bool))[None, None]
    else:
      k = jax.lax.dynamic_update_slice_in_dim(cache["key"], k, position, axis=1)
      v = jax.lax.dynamic_update_slice_in_dim(cache["value"], v, position, axis=1)
      cache = dict(key=k, value=v)
      mask = (jnp.arange(k.shape[1]) <= position)[None, None, None, :]
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(dh)
    probs = _masked_softmax(scores, mask)
    ctx = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v)
    return nn.DenseGeneral(d, axis=(-2, -1), name="out")(ctx), cache


class _TransformerDecoderLayer(nn.Module):
  num_heads: int
  ff_mult: int
  attention: str
  dropout_rate: float

  @nn.compact
  def __call__(self, x: Array, memory: Array, memory_paddings: Array, *, train: bool,
               cache: dict | None = None, position: Array | None = None):
    drop = lambda h: nn.Dropout(self.dropout_rate)(h, deterministic=not train)
    h, cache = _CausalSelfAttention(self.num_heads, name="self_attention")(
        nn.LayerNorm(name="ln_self")(x), cache, position)
    x = x + drop(h)
    h, _ = CrossAttention(self.attention, self.num_heads, name="cross_attention")(
        nn.LayerNorm(name="ln_cross")(x), memory, memory_paddings)
    x = x + drop(h)
    x = x + drop(layers.FeedForward(self.ff_mult, self.dropout_rate, nn.gelu, name="ff")(
        nn.LayerNorm(name="ln_ff")(x), train=train))
    return x, cache


class TransformerDecoder(nn.Module):
  """Pre-LN Transformer decoder (see module docstring). State: per-layer key/value caches."""
  vocab_size: int
  dim: int = 144
  num_layers: int = 2
  attention: str = "dot"
  num_heads: int = 4
  ff_mult: int = 4
  dropout_rate: float = 0.0

  def setup(self):
    if self.attention not in ATTENTION_KINDS:
      raise ValueError(f"attention {self.attention!r} is not one of {ATTENTION_KINDS}")
    self.embed = nn.Embed(self.vocab_size, self.dim)
    self.blocks = [_TransformerDecoderLayer(self.num_heads, self.ff_mult, self.attention,
                                            self.dropout_rate) for _ in range(self.num_layers)]
    self.ln_out = nn.LayerNorm()
    self.logits = nn.Dense(self.vocab_size, dtype=jnp.float32)
    self.dropout = nn.Dropout(self.dropout_rate)

  def init_state(self, memory: Array, max_length: int) -> dict:
    b = memory.shape[0]
    dh = self.dim // self.num_heads
    zeros = jnp.zeros((b, max_length, self.num_heads, dh), jnp.float32)
    return dict(layers=tuple(dict(key=zeros, value=zeros) for _ in range(self.num_layers)))

  def __call__(self, memory: Array, memory_paddings: Array, inputs: Array, *,
               train: bool) -> Array:
    x = (self.embed(inputs) * math.sqrt(self.dim)
         + layers.sinusoidal_positions(inputs.shape[1], self.dim)[None])
    x = self.dropout(x, deterministic=not train)
    for block in self.blocks:
      x, _ = block(x, memory, memory_paddings, train=train)
    return self.logits(self.ln_out(x))

  def step(self, state: dict, memory: Array, memory_paddings: Array, tokens: Array,
           position: Array) -> tuple[Array, dict]:
    max_length = state["layers"][0]["key"].shape[1]
    pos = jax.lax.dynamic_slice_in_dim(layers.sinusoidal_positions(max_length, self.dim),
                                       position, 1, axis=0)
    x = self.embed(tokens[:, None]) * math.sqrt(self.dim) + pos[None]
    caches = []
    for block, cache in zip(self.blocks, state["layers"]):
      x, cache = block(x, memory, memory_paddings, train=False, cache=cache, position=position)
      caches.append(cache)
    return self.logits(self.ln_out(x))[:, 0], dict(layers=tuple(caches))


DECODERS = {"lstm": LstmDecoder, "transformer": TransformerDecoder}
