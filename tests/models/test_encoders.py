"""Student encoders: shapes, hidden states, and padding invariance (an utterance gives the same
valid frames alone and inside a padded batch; tolerance 1e-4 absolute, float32)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.models import encoders

SMALL = {
    "conformer": dict(model_dim=32, num_layers=2, num_heads=2, conv_kernel=5,
                      subsampling_channels=8),
    "transformer": dict(model_dim=32, num_layers=2, num_heads=2, subsampling_channels=8),
    "lstm": dict(model_dim=16, num_layers=2, subsampling_channels=8),
    "lstm_uni": dict(model_dim=16, num_layers=2, bidirectional=False, subsampling_channels=8),
}


def _make(name, **kw):
  cls = encoders.ENCODERS[name.split("_")[0]]
  return cls(**SMALL[name], dropout_rate=0.0, **kw)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_shapes_and_padding_invariance(name):
  enc = _make(name)
  rng = np.random.default_rng(0)
  feats = jnp.asarray(rng.normal(size=(2, 40, 12)), jnp.float32)
  pads = jnp.zeros((2, 40)).at[1, 23:].set(1.0)
  feats = feats * (1 - pads)[..., None]
  params = jax.jit(enc.init, static_argnames="train")(jax.random.key(0), feats, pads,
                                                       train=False)
  apply = jax.jit(enc.apply, static_argnames="train")
  out = apply(params, feats, pads, train=False)
  d = SMALL[name]["model_dim"]
  assert out["outputs"].shape == (2, 10, d)
  assert out["hidden_states"].shape == (3, 2, 10, d)
  np.testing.assert_allclose(out["hidden_states"][-1], out["outputs"])
  np.testing.assert_array_equal(out["paddings"][1], [0] * 6 + [1] * 4)  # ceil(23/4) = 6
  assert float(jnp.abs(out["outputs"][1, 6:]).max()) == 0.0
  alone = apply(params, feats[1:, :23], pads[1:, :23], train=False)
  np.testing.assert_allclose(alone["outputs"][0], out["outputs"][1, :6], atol=1e-4)


@pytest.mark.parametrize("factor,frames", [(1, 40), (2, 20), (4, 10), (8, 5)])
def test_subsampling_factors(factor, frames):
  enc = encoders.ConformerEncoder(model_dim=16, num_layers=1, num_heads=2, subsampling=factor,
                                  subsampling_channels=4)
  x = jnp.zeros((1, 40, 12))
  out = jax.eval_shape(lambda: enc.init_with_output(jax.random.key(0), x, x[..., 0],
                                                     train=False)[0])
  assert out["outputs"].shape[1] == frames


@pytest.mark.slow  # 17 s in CI; the streaming students are later work
def test_causal_conformer_ignores_the_future():
  enc = _make("conformer", causal=True)
  x = jnp.asarray(np.random.default_rng(1).normal(size=(1, 40, 12)), jnp.float32)
  p = jnp.zeros((1, 40))
  params = enc.init(jax.random.key(0), x, p, train=False)
  apply = jax.jit(lambda v: enc.apply(params, v, p, train=False)["outputs"])
  a, b = apply(x), apply(x.at[:, 30:].set(5.0))
  # Output frame t sees input frames up to about 4t+2 through the subsampling convs.
  np.testing.assert_allclose(a[0, :6], b[0, :6], atol=1e-5)
  assert not np.allclose(a[0, 8:], b[0, 8:])


@pytest.mark.slow  # heavy: keeps the default run under 20 minutes
def test_dropout_is_active_only_in_training():
  enc = encoders.ConformerEncoder(**SMALL["conformer"], dropout_rate=0.5)
  x = jnp.ones((1, 16, 12))
  p = jnp.zeros((1, 16))
  params = enc.init(jax.random.key(0), x, p, train=False)
  f = jax.jit(lambda k: enc.apply(params, x, p, train=True, rngs={"dropout": k})["outputs"])
  ev = jax.jit(lambda: enc.apply(params, x, p, train=False)["outputs"])
  np.testing.assert_allclose(ev(), ev())
  r1, r2 = f(jax.random.key(1)), f(jax.random.key(2))
  assert not np.allclose(r1, r2)
