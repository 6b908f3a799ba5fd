"""PCA and orthogonal Procrustes on inputs with known answers (float32, tolerances stated)."""

import numpy as np
import pytest

from distill_jax.viz import projection


def _random_rotation(d, seed):
  q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
  return q * np.sign(np.diag(r))


def test_pca_recovers_known_axes_and_variances():
  rng = np.random.default_rng(0)
  # Independent coordinates with standard deviations 5, 2, 0.5 along a rotated basis.
  z = rng.normal(size=(4000, 3)) * np.array([5.0, 2.0, 0.5])
  rot = _random_rotation(3, 1)
  x = z @ rot.T + np.array([1.0, -2.0, 3.0])
  pca = projection.fit_pca(x, 2)
  # Components are the first two rotated axes, up to sign (fixed by the convention).
  for i in range(2):
    assert abs(abs(float(np.dot(np.asarray(pca.components[i]), rot[:, i]))) - 1) < 2e-3
  var = np.array([25.0, 4.0, 0.25])
  np.testing.assert_allclose(pca.explained_variance_ratio, var[:2] / var.sum(), atol=0.01)
  np.testing.assert_allclose(pca.mean, [1.0, -2.0, 3.0], atol=0.2)
  coords = np.asarray(projection.project(pca, x))
  # Projected coordinates are the original ones (up to sign), to float32 + sampling precision.
  for i in range(2):
    c = np.corrcoef(coords[:, i], z[:, i])[0, 1]
    assert abs(abs(c) - 1) < 2e-3  # sample PCA axes differ from the true ones at N = 4000


def test_pca_exact_on_a_line_and_rejects_bad_k():
  t = np.linspace(-1, 1, 11)
  x = np.stack([3 * t, 4 * t], 1)  # a line along (0.6, 0.8)
  pca = projection.fit_pca(x, 1)
  np.testing.assert_allclose(pca.components[0], [0.6, 0.8], atol=1e-6)
  np.testing.assert_allclose(pca.explained_variance_ratio, [1.0], atol=1e-6)
  np.testing.assert_allclose(np.asarray(projection.project(pca, x))[:, 0], 5 * t, atol=1e-5)
  with pytest.raises(ValueError, match="k=3"):
    projection.fit_pca(x, 3)
  with pytest.raises(ValueError, match=r"\[N, D\]"):
    projection.fit_pca(x[0], 1)


@pytest.mark.parametrize("ds,dt", [(5, 5), (3, 6)])
def test_procrustes_recovers_a_scaled_rotation(ds, dt):
  rng = np.random.default_rng(2)
  src = rng.normal(size=(200, ds))
  w = _random_rotation(dt, 3)[:ds, :dt]  # orthonormal rows
  tgt = 2.5 * (src - src.mean(0)) @ w + np.arange(dt)
  p = projection.fit_procrustes(src, tgt)
  mapped = np.asarray(projection.apply_procrustes(p, src))
  # Exactly reachable: the map is found to float32 precision.
  np.testing.assert_allclose(float(p.scale), 2.5, rtol=1e-4)
  np.testing.assert_allclose(mapped, tgt, atol=1e-4)
  r = np.asarray(p.rotation)
  np.testing.assert_allclose(r @ r.T, np.eye(ds), atol=1e-5)


@pytest.mark.parametrize("ds,dt", [(4, 4), (6, 4), (3, 5)])
def test_procrustes_is_optimal_against_random_orthogonal_maps(ds, dt):
  """The closed form beats every other scaled orthogonal map of the zero-padded problem."""
  rng = np.random.default_rng(4)
  src = rng.normal(size=(100, ds))
  tgt = rng.normal(size=(100, dt)) + src[:, :1]
  d = max(ds, dt)
  pad = lambda x: np.pad(x - x.mean(0), ((0, 0), (0, d - x.shape[1])))
  sc, tc = pad(src), pad(tgt)
  p = projection.fit_procrustes(src, tgt)
  r = np.asarray(p.rotation)
  np.testing.assert_allclose(r.T @ r if ds > dt else r @ r.T, np.eye(min(ds, dt)), atol=1e-5)
  # The padded objective at the fitted map (the part of s*S0*Q outside W counts too).
  mapped = np.asarray(projection.apply_procrustes(p, src)) - tgt.mean(0)
  err = np.sum((mapped - tgt + tgt.mean(0)) ** 2) + (
      float(p.scale) ** 2 * (np.sum(sc ** 2) - np.sum((sc[:, :ds] @ r) ** 2)))
  for seed in range(30):
    q = _random_rotation(d, 10 + seed)
    s = max(np.trace(sc.T @ tc @ q.T) / np.sum(sc ** 2), 0.0)
    assert err <= np.sum((s * sc @ q - tc) ** 2) + 1e-3
  with pytest.raises(ValueError, match="frames"):
    projection.fit_procrustes(src, tgt[:50])
