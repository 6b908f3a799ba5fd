"""losses/kl.py: the tempered KL against a float64 loop, its gradient, weights, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.losses import kl

# Jitted once per shape: faster than eager op-by-op dispatch, and checks that all of it traces.
_kl = jax.jit(kl.kl_divergence, static_argnames=("blank_id",))
_kl_grad = jax.jit(jax.grad(
    lambda z, a, p, t, **kw: kl.kl_divergence(z, a, p, t, **kw)["loss"]))


def _log_softmax(x, axis=-1):
  x = np.asarray(x, np.float64)
  m = np.max(x, axis=axis, keepdims=True)
  return x - m - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


def _np_kl(zs, at, pad, temperature, blank_weight=1.0, blank_threshold=0.9, blank_id=0):
  """Float64 loop reference of kl_divergence: (loss, weight)."""
  total, weight = 0.0, 0.0
  for b in range(zs.shape[0]):
    for f in range(zs.shape[1]):
      if pad[b, f] > 0.5:
        continue
      log_ps = _log_softmax(zs[b, f] / temperature)
      log_pt = _log_softmax(at[b, f] / temperature)
      pt = np.exp(log_pt)
      kl = sum(pt[v] * (log_pt[v] - log_ps[v]) for v in range(len(pt)) if pt[v] > 0)
      w = blank_weight if np.exp(_log_softmax(at[b, f]))[blank_id] > blank_threshold else 1.0
      total += w * kl
      weight += w
  return temperature**2 * total / weight, weight


def _kl_batch(seed, b=3, t=7, v=6):
  rng = np.random.default_rng(seed)
  zs = rng.normal(size=(b, t, v)).astype(np.float32)
  at = (2.0 * rng.normal(size=(b, t, v))).astype(np.float32)
  pad = np.zeros((b, t), np.float32)
  pad[1, 5:] = 1.0
  pad[2, 2:] = 1.0
  return zs, at, pad


# ----------------------------------------------------------------------------- KL


def test_kl_is_zero_when_student_equals_teacher():
  zs, _, pad = _kl_batch(0)
  for teacher in (zs, np.asarray(jax.nn.log_softmax(zs))):  # logits or log-probs
    res = _kl(jnp.asarray(zs), jnp.asarray(teacher), jnp.asarray(pad), 2.0)
    assert abs(float(res["loss"])) < 1e-6  # float32 rounding only
    assert float(res["num_frames"]) == 3 * 7 - 2 - 5


def test_kl_matches_numpy_reference():
  zs, at, pad = _kl_batch(1)
  at[0, 1, 2] = -np.inf  # a zero teacher probability: 0 log 0 = 0
  at[0, 3, :4] = -np.inf
  for temperature in (1.0, 2.5):
    res = _kl(jnp.asarray(zs), jnp.asarray(at), jnp.asarray(pad), temperature)
    ref, weight = _np_kl(zs, at, pad, temperature)
    np.testing.assert_allclose(res["loss"], ref, rtol=1e-5)  # float32 vs float64
    np.testing.assert_allclose(res["kl"], ref / temperature**2, rtol=1e-5)
    np.testing.assert_allclose(res["sum"] / res["weight"], ref, rtol=1e-5)
    assert float(res["weight"]) == weight
    g = _kl_grad(jnp.asarray(zs), jnp.asarray(at), jnp.asarray(pad), temperature)
    assert np.all(np.isfinite(g))


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kl_gradient_is_t_times_prob_difference_over_frames(temperature):
  zs, at, pad = _kl_batch(2)
  g = _kl_grad(jnp.asarray(zs), jnp.asarray(at), jnp.asarray(pad), temperature)
  ps = np.exp(_log_softmax(zs / temperature))
  pt = np.exp(_log_softmax(at / temperature))
  n = np.sum(1.0 - pad)
  expected = temperature * (ps - pt) / n * (1.0 - pad)[..., None]
  np.testing.assert_allclose(g, expected, atol=1e-6)  # float32 softmax differences


def test_padded_frames_contribute_nothing():
  zs, at, pad = _kl_batch(3)
  zs2, at2 = zs.copy(), at.copy()
  zs2[pad > 0.5] = 1e3
  at2[pad > 0.5] = np.nan  # garbage (even nan) in padded frames is ignored
  at2[2, 4] = -np.inf
  loss = lambda z, a: _kl(jnp.asarray(z), jnp.asarray(a), jnp.asarray(pad), 2.0)["loss"]
  np.testing.assert_array_equal(loss(zs, at), loss(zs2, at2))
  g = _kl_grad(jnp.asarray(zs2), jnp.asarray(at2), jnp.asarray(pad), 2.0)
  assert np.all(np.isfinite(g))
  assert float(jnp.abs(g[pad > 0.5]).max()) == 0.0


def test_blank_down_weighting():
  zs, at, pad = _kl_batch(4)
  at[:, ::2, 0] = 12.0  # even frames: the teacher is confidently blank (P(blank) > 0.99)
  confident = (np.exp(_log_softmax(at))[..., 0] > 0.9) & (pad < 0.5)
  assert confident.sum() >= 3 and (~confident & (pad < 0.5)).sum() >= 3
  for bw in (0.0, 0.3, 1.0):
    res = _kl(jnp.asarray(zs), jnp.asarray(at), jnp.asarray(pad), 2.0, blank_weight=bw,
              blank_threshold=0.9)
    ref, weight = _np_kl(zs, at, pad, 2.0, blank_weight=bw, blank_threshold=0.9)
    np.testing.assert_allclose(res["loss"], ref, rtol=1e-5)
    np.testing.assert_allclose(res["weight"], weight, rtol=1e-6)
    assert int(res["num_downweighted"]) == confident.sum()
  # blank_weight=0 is the KL over the other frames only.
  res0 = _kl(jnp.asarray(zs), jnp.asarray(at), jnp.asarray(pad), 2.0, blank_weight=0.0)
  only = _kl(jnp.asarray(zs), jnp.asarray(at), jnp.asarray(np.maximum(pad, confident)), 2.0)
  np.testing.assert_allclose(res0["loss"], only["loss"], rtol=1e-6)
  # Gradient: T * w_f (p_s - p_t) / W.
  g = _kl_grad(jnp.asarray(zs), jnp.asarray(at), jnp.asarray(pad), 2.0, blank_weight=0.3)
  w = np.where(confident, 0.3, 1.0) * (1.0 - pad)
  diff = np.exp(_log_softmax(zs / 2.0)) - np.exp(_log_softmax(at / 2.0))
  np.testing.assert_allclose(g, 2.0 * w[..., None] * diff / w.sum(), atol=1e-6)


def test_kl_argument_errors():
  zs, at, pad = (jnp.asarray(x) for x in _kl_batch(5))
  with pytest.raises(ValueError, match=r"temperature must lie in \(0.0, inf\), got 0.0"):
    kl.kl_divergence(zs, at, pad, 0.0)
  with pytest.raises(ValueError, match="blank_weight .* got 1.5"):
    kl.kl_divergence(zs, at, pad, blank_weight=1.5)
  with pytest.raises(ValueError, match=r"teacher_log_probs has shape \(3, 7, 5\)"):
    kl.kl_divergence(zs, at[..., :5], pad)


# ----------------------------------------------------------------------------- alignment


