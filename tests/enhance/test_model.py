"""enhance/model.py: size and latency budget, streaming == whole utterance, causality."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.enhance import model as model_lib
from distill_jax.enhance import stft

TINY = model_lib.Denoiser(frame=stft.FrameSpec(128, 32), num_linear=8, num_erb=8,
                          channels=(4, 8), hidden=16, num_gru=2)


def _params_shape(model):
  x = jnp.zeros((1, 2, model.frame.num_bins), jnp.complex64)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), x, model.initial_state(1)))


def test_default_model_is_within_budget():
  model = model_lib.Denoiser()
  n = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(_params_shape(model)))
  assert 100_000 < n <= 500_000, n
  assert model.frame.latency_ms <= 10.0  # lookahead 0 frames: the framing's 2R - 1 samples
  macs = model_lib.count_macs_per_frame(model)
  assert macs["total"] * model.frame.sample_rate / model.frame.hop < 200e6


def test_stream_equals_whole_utterance():
  params = model_lib.init_params(TINY, seed=0)
  # Non-zero mask: scale the mask head up so the check is not on a near-zero output.
  params = jax.tree_util.tree_map(lambda p: p * 3.0, params)
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 24 * 32)) * 0.1, jnp.float32)
  y = jax.jit(lambda p, w: model_lib.enhance(TINY, p, w))(params, x)
  z = jax.jit(lambda p, w: model_lib.stream(TINY, p, w))(params, x)
  assert float(jnp.std(y)) > 1e-3
  np.testing.assert_allclose(np.asarray(z[:, 32:]), np.asarray(y), atol=1e-5)


def test_output_never_depends_on_later_input():
  # Input from block 10 on changes: calls 0..9 (stream samples < 10 R) never saw it and must
  # not change (call b returns stream block b, the offline block b - 1): no lookahead.
  params = jax.tree_util.tree_map(lambda p: p * 3.0, model_lib.init_params(TINY, seed=1))
  x = np.random.default_rng(1).standard_normal((1, 16 * 32)).astype(np.float32) * 0.1
  x2 = x.copy()
  x2[:, 10 * 32:] += 0.5
  run = jax.jit(lambda w: model_lib.stream(TINY, params, w))
  z, z2 = np.asarray(run(x)), np.asarray(run(x2))
  np.testing.assert_array_equal(z[:, :10 * 32], z2[:, :10 * 32])
  assert np.abs(z[:, 10 * 32:11 * 32] - z2[:, 10 * 32:11 * 32]).max() > 1e-4


def test_bad_shapes_are_named_errors():
  with pytest.raises(ValueError, match="divisible"):
    model_lib.init_params(model_lib.Denoiser(num_linear=30, num_erb=31), 0)
  with pytest.raises(ValueError, match="multiple of the hop"):
    model_lib.stream(TINY, None, jnp.zeros((1, 33)))
