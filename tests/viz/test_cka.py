"""Linear CKA: 1 for identical inputs, invariant to rotations and isotropic scaling."""

import numpy as np
import pytest

from distill_jax.viz import cka


def _x(n=300, d=12, seed=0):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(n, d)) @ rng.normal(size=(d, d))  # correlated columns


def test_identical_representations_give_one():
  x = _x()
  np.testing.assert_allclose(float(cka.linear_cka(x, x)), 1.0, atol=1e-5)


def test_invariant_to_orthogonal_transforms_and_isotropic_scaling():
  x, y = _x(seed=0), _x(d=7, seed=1) + 0.5 * _x(seed=0)[:, :7]
  q, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(12, 12)))
  base = float(cka.linear_cka(x, y))
  assert 0.05 < base < 0.95  # a nontrivial value, so invariance is tested on something
  np.testing.assert_allclose(float(cka.linear_cka(x @ q, y)), base, atol=1e-5)
  np.testing.assert_allclose(float(cka.linear_cka(3.7 * x, 0.01 * y)), base, rtol=1e-4)
  np.testing.assert_allclose(float(cka.linear_cka(x + 5.0, y)), base, atol=1e-5)  # centring
  np.testing.assert_allclose(float(cka.linear_cka(x @ q, x)), 1.0, atol=1e-5)


def test_not_invariant_to_general_linear_maps_and_low_for_independent_noise():
  x = np.random.default_rng(3).normal(size=(2000, 6))
  a = np.diag([10.0, 1, 1, 1, 1, 0.1])
  assert float(cka.linear_cka(x, x @ a)) < 0.9
  noise = np.random.default_rng(4).normal(size=(2000, 6))
  assert float(cka.linear_cka(x, noise)) < 0.02


def test_matrix_and_errors():
  x = _x()
  y = _x(d=5, seed=7)
  m = np.asarray(cka.cka_matrix([x, x[:, :4]], [x, 2 * x, y]))
  assert m.shape == (2, 3)
  np.testing.assert_allclose(m[0, :2], [1.0, 1.0], atol=1e-5)
  # The Gram form agrees with the feature form of linear_cka.
  for i, a in enumerate([x, x[:, :4]]):
    for j, b in enumerate([x, 2 * x, y]):
      np.testing.assert_allclose(m[i, j], float(cka.linear_cka(a, b)), atol=1e-5)
  with pytest.raises(ValueError, match="same N"):
    cka.cka_matrix([x], [x[:10]])
  with pytest.raises(ValueError, match="same N"):
    cka.linear_cka(x, x[:10])
