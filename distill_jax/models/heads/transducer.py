"""RNN-Transducer head: prediction network and joint network (Graves 2012).

Prediction network: a label-side language model g_u = Pred(y_0 .. y_u) with y_0 = blank (the
start symbol, as in icefall/k2):
  * 'lstm': embedding -> stacked LSTMs;
  * 'stateless' (Ghodsi et al. 2020; icefall's stateless decoder with context 1): the
    embedding of the last token alone.

Joint network: z[t, u] = W_out tanh(W_enc h_t + W_pred g_u) -> V logits, formed for the whole
[T, U+1] lattice in training (the loss in losses/transducer.py) and one (t, u) pair per
hypothesis when decoding.

Interfaces:
  PredictionNetwork.__call__(tokens [B, U+1], *, train) -> g [B, U+1, D]
  PredictionNetwork.init_state(batch) / .step(state, tokens [B]) -> (g [B, D], state)
  JointNetwork.__call__(enc [B, T, De], pred [B, U+1, Dp]) -> logits [B, T, U+1, V]
  JointNetwork.project_encoder(enc [..., De]) -> [..., J];
  JointNetwork.project_prediction(g [..., Dp]) -> [..., J];
  JointNetwork.joint(enc_proj [..., J], pred_proj [..., J]) -> logits [..., V]
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

PREDICTOR_KINDS = ("lstm", "stateless")


class PredictionNetwork(nn.Module):
  vocab_size: int
  dim: int = 256
  kind: str = "lstm"
  num_layers: int = 1
  dropout_rate: float = 0.0

  def setup(self):
    if self.kind not in PREDICTOR_KINDS:
      raise ValueError(f"prediction network kind {self.kind!r} is not one of "
                       f"{PREDICTOR_KINDS}")
    self.embed = nn.Embed(self.vocab_size, self.dim)
    n = self.num_layers if self.kind == "lstm" else 0
    self.cells = [nn.OptimizedLSTMCell(self.dim) for _ in range(n)]
    self.dropout = nn.Dropout(self.dropout_rate)

  def init_state(self, batch: int) -> tuple:
    zeros = jnp.zeros((batch, self.dim), jnp.float32)
    return tuple((zeros, zeros) for _ in self.cells)

  def __call__(self, tokens: Array, *, train: bool) -> Array:
    x = self.embed(tokens)
    if self.kind == "stateless":
      return x
    scan = nn.scan(lambda cell, carry, xt: cell(carry, xt), variable_broadcast="params",
                   split_rngs={"params": False}, in_axes=1, out_axes=1)
    for cell, carry in zip(self.cells, self.init_state(tokens.shape[0])):
      _, x = scan(cell, carry, x)
      x = self.dropout(x, deterministic=not train)
    return x

  def step(self, state: tuple, tokens: Array) -> tuple[Array, tuple]:
    x = self.embed(tokens)
    new = []
    for cell, carry in zip(self.cells, state):
      carry, x = cell(carry, x)
      new.append(carry)
    return x, tuple(new)


class JointNetwork(nn.Module):
  vocab_size: int
  dim: int = 256

  def setup(self):
    self.enc_proj = nn.Dense(self.dim)
    self.pred_proj = nn.Dense(self.dim, use_bias=False)
    self.out = nn.Dense(self.vocab_size, dtype=jnp.float32)

  def project_encoder(self, enc: Array) -> Array:
    return self.enc_proj(enc)

  def project_prediction(self, pred: Array) -> Array:
    return self.pred_proj(pred)

  def joint(self, enc_proj: Array, pred_proj: Array) -> Array:
    return self.out(jnp.tanh(enc_proj + pred_proj))

  def __call__(self, enc: Array, pred: Array) -> Array:
    return self.joint(self.project_encoder(enc)[:, :, None], self.project_prediction(pred)[:, None])
