"""Attention decoders: additive attention by hand, teacher forcing == incremental decoding,
padding invariance, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.models.heads import attention_decoder as ad

V, D, T = 11, 16, 9


def _memory(b=2, seed=0):
  rng = np.random.default_rng(seed)
  memory = jnp.asarray(rng.normal(size=(b, T, D)).astype(np.float32))
  paddings = jnp.zeros((b, T)).at[1, 6:].set(1.0)
  return memory, paddings


def test_additive_attention_equals_the_bahdanau_formula():
  memory, paddings = _memory()
  q = jnp.asarray(np.random.default_rng(1).normal(size=(2, 3, D)).astype(np.float32))
  att = ad.CrossAttention("additive", attention_dim=8)
  params = att.init(jax.random.key(0), q, memory, paddings)["params"]
  ctx, weights = att.apply({"params": params}, q, memory, paddings)
  w1 = np.asarray(params["w_query"]["kernel"])
  w2, b2 = np.asarray(params["w_key"]["kernel"]), np.asarray(params["w_key"]["bias"])
  v = np.asarray(params["v"])[:, 0]
  q_np, m_np, pad = np.asarray(q), np.asarray(memory), np.asarray(paddings)
  e = np.tanh((q_np @ w1)[:, :, None] + (m_np @ w2 + b2)[:, None]) @ v   # [B, U, T]
  e = np.where(pad[:, None] > 0.5, -np.inf, e)
  a = np.exp(e - e.max(-1, keepdims=True))
  a /= a.sum(-1, keepdims=True)
  np.testing.assert_allclose(weights, a, atol=1e-6)
  assert np.all(np.asarray(weights)[1, :, 6:] == 0)  # padded frames get no weight
  expected = np.einsum("but,btd->bud", a, m_np) @ np.asarray(params["out"]["kernel"]) + \
      np.asarray(params["out"]["bias"])
  np.testing.assert_allclose(ctx, expected, atol=1e-5)


def test_dot_attention_weights_sum_to_one_and_skip_padding():
  memory, paddings = _memory()
  q = jnp.ones((2, 4, D))
  att = ad.CrossAttention("dot", num_heads=4)
  params = att.init(jax.random.key(0), q, memory, paddings)["params"]
  _, weights = att.apply({"params": params}, q, memory, paddings)
  np.testing.assert_allclose(np.asarray(weights).sum(-1), 1.0, atol=1e-6)
  assert np.all(np.asarray(weights)[1, :, 6:] == 0)


def _decoder(kind, attention):
  if kind == "lstm":
    return ad.LstmDecoder(V, dim=D, num_layers=2, attention=attention, num_heads=2)
  return ad.TransformerDecoder(V, dim=D, num_layers=2, attention=attention, num_heads=2,
                               ff_mult=2)


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
@pytest.mark.parametrize("attention", ["additive", "dot"])
def test_teacher_forcing_equals_incremental_decoding(kind, attention):
  memory, paddings = _memory()
  inputs = jnp.asarray(np.random.default_rng(2).integers(0, V, size=(2, 6)))
  dec = _decoder(kind, attention)
  params = dec.init(jax.random.key(0), memory, paddings, inputs, train=False)["params"]
  full = dec.apply({"params": params}, memory, paddings, inputs, train=False)
  assert full.shape == (2, 6, V) and full.dtype == jnp.float32
  state = dec.apply({"params": params}, memory, 8, method=dec.init_state)
  step = jax.jit(lambda st, tok, i: dec.apply({"params": params}, st, memory, paddings, tok, i,
                                              method=dec.step))
  for i in range(6):
    logits, state = step(state, inputs[:, i], jnp.int32(i))
    np.testing.assert_allclose(logits, full[:, i], atol=2e-5, err_msg=f"position {i}")


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_an_utterance_decodes_the_same_alone_and_in_a_padded_batch(kind):
  memory, paddings = _memory()
  inputs = jnp.asarray(np.random.default_rng(3).integers(0, V, size=(2, 5)))
  dec = _decoder(kind, "additive")
  params = dec.init(jax.random.key(0), memory, paddings, inputs, train=False)["params"]
  both = dec.apply({"params": params}, memory, paddings, inputs, train=False)
  alone = dec.apply({"params": params}, memory[1:, :6], paddings[1:, :6], inputs[1:],
                    train=False)
  np.testing.assert_allclose(both[1], alone[0], atol=2e-5)


def test_unknown_attention_kind_is_named():
  memory, paddings = _memory()
  dec = ad.LstmDecoder(V, dim=D, attention="location")
  with pytest.raises(ValueError, match="location"):
    dec.init(jax.random.key(0), memory, paddings, jnp.zeros((2, 1), int), train=False)
