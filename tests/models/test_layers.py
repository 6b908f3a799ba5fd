"""Layers written as shifted slices are the convolutions they replace (float32, atol 1e-5)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.models import layers


@pytest.mark.parametrize("causal", [False, True])
def test_depthwise_conv_equals_grouped_conv(causal):
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 17, 6)), jnp.float32)
  ours = layers.DepthwiseConv1D(5, causal=causal)
  p = ours.init(jax.random.key(0), x)["params"]
  ref = nn.Conv(6, (5,), feature_group_count=6, padding=[(4, 0)] if causal else "SAME")
  ref_p = {"kernel": p["kernel"][:, None, :], "bias": p["bias"]}
  np.testing.assert_allclose(ours.apply({"params": p}, x), ref.apply({"params": ref_p}, x),
                             atol=1e-5)


@pytest.mark.parametrize("t,f", [(9, 8), (10, 7)])
def test_patch_matmul_equals_strided_conv2d(t, f):
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2, t, f, 3)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 3, 3, 4)), jnp.float32)
  ref = jax.lax.conv_general_dilated(x, w, (2, 2), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
  ours = layers.conv2d_patches(x) @ w.reshape(27, 4)
  np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_rotary_embedding_is_relative():
  """q.k after rotation depends only on the distance between positions."""
  rng = np.random.default_rng(2)
  q = jnp.asarray(rng.normal(size=(1, 1, 1, 8)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(1, 1, 1, 8)), jnp.float32)
  def score(i, j):
    qs = layers.rotary_embedding(jnp.tile(q, (1, 12, 1, 1)))[0, i, 0]
    ks = layers.rotary_embedding(jnp.tile(k, (1, 12, 1, 1)))[0, j, 0]
    return float(qs @ ks)
  assert score(3, 1) == pytest.approx(score(9, 7), rel=1e-5)
  assert score(3, 1) != pytest.approx(score(3, 2), rel=1e-3)
