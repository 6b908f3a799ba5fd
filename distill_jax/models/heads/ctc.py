"""CTC output head: a linear layer from encoder frames to vocabulary logits."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class CtcHead(nn.Module):
  """encoder outputs [B, T, D] -> logits [B, T, V] in float32 (index 0 is the CTC blank)."""
  vocab_size: int
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    return nn.Dense(self.vocab_size, dtype=jnp.float32, name="logits")(x)
