"""losses/hidden.py: hidden-state losses on known vectors, against numpy, and the whole KD
loss under jit."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.losses import frame_align, hidden, kl
from distill_jax.models import projection
from tests.losses.test_kl import _kl_batch

_kl = jax.jit(kl.kl_divergence, static_argnames=("blank_id",))
_hidden = jax.jit(hidden.hidden_loss, static_argnums=(3,))
_hidden_grad = jax.jit(jax.grad(
    lambda s, t, p, kind: hidden.hidden_loss(s, t, p, kind)["loss"]), static_argnums=(3,))


def test_hidden_losses_on_known_vectors():
  e1, e2 = np.eye(3, dtype=np.float32)[:2]
  student = jnp.asarray(np.stack([e1, 5.0 * e1, e1, e1])[None])  # [1, 4, 3]
  teacher = jnp.asarray(np.stack([e1, e1, e2, -e1])[None])
  # Per frame: identical, same direction, orthogonal, opposite.
  np.testing.assert_allclose(hidden.nmse_frames(student, teacher)[0], [0.0, 0.0, 2.0, 4.0],
                             atol=1e-6)
  log2, lsig1 = math.log(2.0), math.log1p(math.exp(-1.0))  # -log sigmoid(0), -log sigmoid(1)
  expected = [lsig1, 4.0 / 3 + lsig1, 2.0 / 3 + log2, 2.0 / 3 + math.log1p(math.e)]
  np.testing.assert_allclose(hidden.l1_cos_frames(student, teacher)[0], expected, rtol=1e-6)
  pad = jnp.asarray([[0.0, 0.0, 0.0, 1.0]])
  res = _hidden(student, teacher, pad, "nmse")
  np.testing.assert_allclose(res["loss"], 2.0 / 3, rtol=1e-6)
  assert float(res["num_frames"]) == 3
  res = _hidden(student, teacher, pad, "l1_cos", cos_weight=0.5)
  ref = (4.0 / 3 + 2.0 / 3 + 0.5 * (2 * lsig1 + log2)) / 3
  np.testing.assert_allclose(res["loss"], ref, rtol=1e-6)


def test_hidden_loss_random_reference_padding_and_zero_vectors():
  rng = np.random.default_rng(20)
  s = rng.normal(size=(2, 5, 8)).astype(np.float32)
  t = rng.normal(size=(2, 5, 8)).astype(np.float32)
  pad = np.zeros((2, 5), np.float32)
  pad[1, 3:] = 1.0
  valid = pad < 0.5
  sn = s / np.linalg.norm(s, axis=-1, keepdims=True)
  tn = t / np.linalg.norm(t, axis=-1, keepdims=True)
  cos = np.sum(sn * tn, -1)
  ref_nmse = np.sum((sn - tn) ** 2, -1)[valid].mean()
  ref_l1cos = (np.abs(s - t).mean(-1) + np.log1p(np.exp(-cos)))[valid].mean()
  loss = lambda x, kind: _hidden(jnp.asarray(x), jnp.asarray(t), jnp.asarray(pad), kind)["loss"]
  np.testing.assert_allclose(loss(jnp.asarray(s), "nmse"), ref_nmse, rtol=1e-5)
  np.testing.assert_allclose(loss(jnp.asarray(s), "l1_cos"), ref_l1cos, rtol=1e-5)
  s2 = s.copy()
  s2[pad > 0.5] = 0.0  # zero vectors in padded frames: same loss, finite zero gradient
  for kind in hidden.HIDDEN_LOSS_KINDS:
    np.testing.assert_allclose(loss(jnp.asarray(s2), kind), loss(jnp.asarray(s), kind),
                               rtol=1e-6)
    g = _hidden_grad(jnp.asarray(s2), jnp.asarray(t), jnp.asarray(pad), kind)
    assert np.all(np.isfinite(g)) and float(jnp.abs(g[pad > 0.5]).max()) == 0.0
  # Several pairs: the mean of the per-pair losses.
  res = hidden.hidden_states_loss([jnp.asarray(s), jnp.asarray(t)],
                                   [jnp.asarray(t), jnp.asarray(t)], jnp.asarray(pad), "nmse")
  np.testing.assert_allclose(res["per_pair"], [ref_nmse, 0.0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(res["loss"], ref_nmse / 2, rtol=1e-5)
  np.testing.assert_allclose(res["sum"] / res["num_frames"], res["loss"], rtol=1e-6)
  with pytest.raises(ValueError, match="unknown hidden-state loss 'mse'"):
    hidden.hidden_loss(jnp.asarray(s), jnp.asarray(t), jnp.asarray(pad), "mse")
  with pytest.raises(ValueError, match=r"teacher states has shape \(2, 5, 4\)"):
    hidden.hidden_loss(jnp.asarray(s), jnp.asarray(t[..., :4]), jnp.asarray(pad))



def test_everything_jits():
  zs, at, pad = (jnp.asarray(x) for x in _kl_batch(40, t=8, v=5))
  teacher_hidden = jnp.asarray(np.random.default_rng(41).normal(size=(4, 3, 16, 6)), jnp.float32)
  student_hidden = jnp.asarray(np.random.default_rng(42).normal(size=(3, 3, 8, 4)), jnp.float32)
  teacher_lp = jnp.repeat(at, 2, axis=1)  # 16 teacher frames at half the student frame length
  teacher_pad = jnp.repeat(pad, 2, axis=1)
  pairs = projection.layer_mapping("last_k", 2, 3, k=2)
  proj = projection.HiddenProjections(pairs, 6)
  proj_params = proj.init(jax.random.PRNGKey(0), student_hidden)

  @jax.jit
  def step(student_logits, proj_params):
    t_lp, t_pad = frame_align.align_teacher(teacher_lp, teacher_pad, 2, 8)
    both = jnp.maximum(pad, t_pad)
    soft = kl.kl_divergence(student_logits, t_lp, both, 2.0, blank_weight=0.5)
    t_states, _ = frame_align.align_hidden(
        jnp.stack(hidden.select_layers(teacher_hidden, [t for _, t in pairs])), teacher_pad, 2, 8)
    hid = hidden.hidden_states_loss(proj.apply(proj_params, student_hidden), list(t_states),
                                     both, "l1_cos")
    return dict(kl=soft["loss"], hidden=hid["loss"], total=soft["loss"] + 0.5 * hid["loss"])

  res = step(zs, proj_params)
  assert all(np.isfinite(float(v)) for v in res.values())
  eager = _kl(zs, at, pad, 2.0, blank_weight=0.5)  # pooling repeats = identity
  np.testing.assert_allclose(res["kl"], eager["loss"], rtol=1e-5)

