"""Linear centered kernel alignment (Kornblith et al. 2019) between two sets of representations.

For X [N, D1] and Y [N, D2] of the same N frames, centred on their column means,

  CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)

which lies in [0, 1], equals 1 for identical representations, and is invariant to orthogonal
transforms and isotropic scaling of either side (not to arbitrary invertible linear maps), so it
compares layers of different widths (a 144-wide student, a 1024-wide teacher) without a learned
map. Computed in float32 through the D x D Gram products (cheap when N >> D).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def linear_cka(x: Array, y: Array) -> Array:
  """x [N, D1], y [N, D2] -> scalar CKA in [0, 1] (0 when either side is constant)."""
  if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
    raise ValueError(f"linear_cka needs [N, D1] and [N, D2] with the same N frames, got "
                     f"{tuple(x.shape)} and {tuple(y.shape)}")
  x = jnp.asarray(x, jnp.float32)
  y = jnp.asarray(y, jnp.float32)
  x = x - jnp.mean(x, 0)
  y = y - jnp.mean(y, 0)
  hp = jax.lax.Precision.HIGHEST
  xy = jnp.sum(jnp.square(jnp.matmul(y.T, x, precision=hp)))
  xx = jnp.sqrt(jnp.sum(jnp.square(jnp.matmul(x.T, x, precision=hp))))
  yy = jnp.sqrt(jnp.sum(jnp.square(jnp.matmul(y.T, y, precision=hp))))
  den = xx * yy
  return jnp.where(den > 0, xy / jnp.where(den > 0, den, 1.0), 0.0)


def _normalized_gram(x: Array) -> Array:
  """Centred Gram matrix X_c X_c^T [N, N] of x [N, D], flattened and scaled to unit norm."""
  x = jnp.asarray(x, jnp.float32)
  x = x - jnp.mean(x, 0)
  g = jnp.matmul(x, x.T, precision=jax.lax.Precision.HIGHEST).reshape(-1)
  norm = jnp.sqrt(jnp.sum(g * g))
  return g / jnp.where(norm > 0, norm, 1.0)


def cka_matrix(xs: list[Array], ys: list[Array]) -> Array:
  """CKA of every pair: xs (Lx arrays [N, Dx]) x ys (Ly arrays [N, Dy]) -> [Lx, Ly].

  Uses the Gram form <K_x, K_y>_F / (||K_x||_F ||K_y||_F) with K = X_c X_c^T (the same value as
  `linear_cka`, since ||Y^T X||_F^2 = <X X^T, Y Y^T>_F), so each layer's N x N Gram matrix is
  built once: keep N to a few thousand frames.
  """
  n = {x.shape[0] for x in list(xs) + list(ys)}
  if len(n) != 1:
    raise ValueError(f"cka_matrix needs the same N frames in every input, got sizes {sorted(n)}")
  gx = jnp.stack([_normalized_gram(x) for x in xs])
  gy = jnp.stack([_normalized_gram(y) for y in ys])
  return jnp.matmul(gx, gy.T, precision=jax.lax.Precision.HIGHEST)
