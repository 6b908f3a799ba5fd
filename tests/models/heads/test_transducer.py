"""Transducer head: the joint formula by hand, prediction network teacher forcing == steps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.models.heads import transducer

V = 9


def test_joint_is_tanh_of_projected_sum_then_vocab_layer():
  rng = np.random.default_rng(0)
  enc = jnp.asarray(rng.normal(size=(2, 5, 6)).astype(np.float32))
  pred = jnp.asarray(rng.normal(size=(2, 4, 7)).astype(np.float32))
  joint = transducer.JointNetwork(V, dim=8)
  params = joint.init(jax.random.key(0), enc, pred)["params"]
  out = joint.apply({"params": params}, enc, pred)
  assert out.shape == (2, 5, 4, V)
  p = jax.tree_util.tree_map(np.asarray, params)
  a = np.asarray(enc) @ p["enc_proj"]["kernel"] + p["enc_proj"]["bias"]  # W_enc h_t
  g = np.asarray(pred) @ p["pred_proj"]["kernel"]                         # W_pred g_u
  h = np.tanh(a[:, :, None] + g[:, None])
  np.testing.assert_allclose(out, h @ p["out"]["kernel"] + p["out"]["bias"], atol=1e-5)


@pytest.mark.parametrize("kind,layers", [("lstm", 1), ("lstm", 2), ("stateless", 1)])
def test_prediction_network_teacher_forcing_equals_steps(kind, layers):
  tokens = jnp.asarray(np.random.default_rng(1).integers(0, V, size=(3, 6)))
  net = transducer.PredictionNetwork(V, dim=8, kind=kind, num_layers=layers)
  params = net.init(jax.random.key(0), tokens, train=False)["params"]
  full = net.apply({"params": params}, tokens, train=False)
  state = net.apply({"params": params}, 3, method=net.init_state)
  for u in range(6):
    g, state = net.apply({"params": params}, state, tokens[:, u], method=net.step)
    np.testing.assert_allclose(g, full[:, u], atol=1e-5)


def test_stateless_predictor_sees_only_the_last_token():
  net = transducer.PredictionNetwork(V, dim=8, kind="stateless")
  a, b = jnp.array([[1, 2, 3]]), jnp.array([[4, 5, 3]])
  params = net.init(jax.random.key(0), a, train=False)["params"]
  ga = net.apply({"params": params}, a, train=False)
  gb = net.apply({"params": params}, b, train=False)
  np.testing.assert_array_equal(ga[:, -1], gb[:, -1])
  assert not np.allclose(ga[:, 0], gb[:, 0])


def test_unknown_predictor_kind_is_named():
  with pytest.raises(ValueError, match="gru"):
    transducer.PredictionNetwork(V, kind="gru").init(jax.random.key(0), jnp.zeros((1, 2), int),
                                                     train=False)
