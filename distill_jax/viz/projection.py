"""Shared low-dimensional bases for hidden states: PCA and orthogonal Procrustes (jittable).

PCA (`fit_pca`): states X [N, D] are centred on their mean mu; the basis is the top-k right
singular vectors of X - mu (rows of `components` [k, D], signs fixed so the largest-magnitude
entry of each is positive, a deterministic choice), and `explained_variance_ratio` [k] is each
component's share of the total variance sum_d Var(X[:, d]). `project(pca, Y)` = (Y - mu) C^T.

Orthogonal Procrustes (`fit_procrustes`): for source states S [N, Ds] and targets T [N, Dt]
of the same frames, find the map y = s * (x - mu_s) W + mu_t with an isotropic scale s >= 0 and
W [Ds, Dt] cut from an orthogonal matrix Q [D, D], D = max(Ds, Dt), that minimizes
sum_n || s (S_n - mu_s, 0) Q - (T_n - mu_t, 0) ||^2: the narrower side is zero-padded to D
dimensions so the problem is the classic square one with a closed form (Schoenemann 1966;
scale as in Gower 1975): with the padded cross-covariance M = S0^T T0 = U Sigma V^T, Q = U V^T
and s = trace(Sigma) / ||S - mu_s||_F^2. Then W = Q[:Ds, :Dt] has orthonormal rows (Ds <= Dt)
or columns (Ds > Dt; the student's extra dimensions must map outside the teacher's space, and
are penalized for it). It rotates (and reflects) and scales only, so it cannot distort the shape
of the student's trajectory: the remaining distance to the teacher is what no rigid map removes.
A student with a learned KD projection (`models/projection.py`, HiddenProjections) is mapped by
that projection instead; see `jobs/latent_page.py`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Pca:
  mean: Array  # [D]
  components: Array  # [k, D], orthonormal rows
  explained_variance_ratio: Array  # [k]
  total_variance: Array  # scalar: sum of per-dimension variances


@dataclasses.dataclass(frozen=True)
class Procrustes:
  source_mean: Array  # [Ds]
  target_mean: Array  # [Dt]
  rotation: Array  # [Ds, Dt]
  scale: Array  # scalar


def _check_2d(name: str, x: Array) -> None:
  if x.ndim != 2 or x.shape[0] < 2:
    raise ValueError(f"{name} must be [N, D] with N >= 2 frames, got shape {tuple(x.shape)}")


def fit_pca(states: Array, k: int) -> Pca:
  """PCA basis of states [N, D] (float32), k <= min(N, D) components."""
  _check_2d("states", states)
  n, d = states.shape
  if not 1 <= k <= min(n, d):
    raise ValueError(f"k={k} components need 1 <= k <= min(N, D) = {min(n, d)}")
  x = jnp.asarray(states, jnp.float32)
  mean = jnp.mean(x, axis=0)
  xc = x - mean
  _, sv, vt = jnp.linalg.svd(xc, full_matrices=False)
  comps = vt[:k]
  sign = jnp.sign(comps[jnp.arange(k), jnp.argmax(jnp.abs(comps), axis=1)])
  comps = comps * jnp.where(sign == 0, 1.0, sign)[:, None]
  var = sv ** 2 / (n - 1)
  total = jnp.sum(var)
  return Pca(mean=mean, components=comps,
             explained_variance_ratio=var[:k] / jnp.maximum(total, 1e-30), total_variance=total)


def project(pca: Pca, states: Array) -> Array:
  """[..., D] -> [..., k] coordinates in the PCA basis."""
  return (jnp.asarray(states, jnp.float32) - pca.mean) @ pca.components.T


def fit_procrustes(source: Array, target: Array) -> Procrustes:
  """Scaled orthogonal map from source [N, Ds] onto target [N, Dt] (same frames, any widths)."""
  _check_2d("source", source)
  _check_2d("target", target)
  if source.shape[0] != target.shape[0]:
    raise ValueError(f"source has {source.shape[0]} frames but target has {target.shape[0]}; "
                     "Procrustes pairs frames one to one")
  s = jnp.asarray(source, jnp.float32)
  t = jnp.asarray(target, jnp.float32)
  mu_s, mu_t = jnp.mean(s, 0), jnp.mean(t, 0)
  sc, tc = s - mu_s, t - mu_t
  ds, dt = s.shape[1], t.shape[1]
  d = max(ds, dt)
  m = jnp.zeros((d, d), jnp.float32).at[:ds, :dt].set(
      jnp.matmul(sc.T, tc, precision=jax.lax.Precision.HIGHEST))
  u, sig, vt = jnp.linalg.svd(m)
  rotation = (u @ vt)[:ds, :dt]
  scale = jnp.sum(sig) / jnp.maximum(jnp.sum(sc * sc), 1e-30)
  return Procrustes(source_mean=mu_s, target_mean=mu_t, rotation=rotation, scale=scale)


def apply_procrustes(p: Procrustes, source: Array) -> Array:
  """[..., Ds] -> [..., Dt] in the target's space."""
  return (p.scale * (jnp.asarray(source, jnp.float32) - p.source_mean) @ p.rotation
          + p.target_mean)
