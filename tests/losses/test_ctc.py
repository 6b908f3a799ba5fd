import jax
import jax.numpy as jnp
import numpy as np
import optax

from distill_jax.losses import ctc


def _batch(rng, b=3, t=12, v=6, u=4):
  logits = jnp.asarray(rng.normal(size=(b, t, v)), jnp.float32)
  labels = jnp.asarray(rng.integers(1, v, size=(b, u)), jnp.int32)
  return logits, jnp.zeros((b, t)), labels, jnp.zeros((b, u))


def test_required_frames_counts_repeats():
  labels = jnp.array([[1, 1, 2, 2], [1, 2, 3, 0], [5, 5, 5, 0]])
  pads = jnp.array([[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 1]], jnp.float32)
  np.testing.assert_array_equal(ctc.required_frames(labels, pads), [6, 3, 5])


def test_matches_optax_when_feasible():
  logits, lp, labels, yp = _batch(np.random.default_rng(0))
  res = ctc.ctc_loss(logits, lp, labels, yp)
  ref = optax.ctc_loss(logits, lp, labels, yp)
  np.testing.assert_allclose(res["per_example"], ref, rtol=1e-6)
  np.testing.assert_allclose(res["loss"], jnp.sum(ref) / 12, rtol=1e-6)
  assert int(res["num_infeasible"]) == 0


def test_infeasible_and_empty_examples_are_masked_and_counted():
  logits, lp, labels, yp = _batch(np.random.default_rng(1))
  lp = lp.at[0, 2:].set(1.0)  # 2 frames for 4 labels: cannot fit
  yp = yp.at[2].set(1.0)  # an empty (filler) row
  res = ctc.ctc_loss(logits, lp, labels, yp)
  np.testing.assert_array_equal(res["weights"], [0.0, 1.0, 0.0])
  assert int(res["num_infeasible"]) == 1
  assert float(res["per_example"][0]) == 0.0
  ref = optax.ctc_loss(logits, lp, labels, yp)
  np.testing.assert_allclose(res["loss"], ref[1] / 4, rtol=1e-6)
  g = jax.grad(lambda x: ctc.ctc_loss(x, lp, labels, yp)["loss"])(logits)
  assert np.all(np.isfinite(g)) and float(jnp.abs(g[0]).max()) == 0.0
