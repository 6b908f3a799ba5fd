"""The student module: front end + encoder + CTC head, built from a config."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from distill_jax.models import build


def _tiny_config(vtlp: bool):
  c = base.get_config()
  c.model.specaug_enabled = False
  c.model.vtlp_enabled = vtlp
  c.model.conformer.update(dict(model_dim=16, num_layers=1, num_heads=2, conv_kernel=3,
                                subsampling_channels=4, dropout_rate=0.0))
  return c


def test_student_outputs_and_frame_count():
  c = _tiny_config(vtlp=False)
  model = build.build_student(c.model, vocab_size=32)
  wave = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16000)).astype(np.float32))
  pad = jnp.zeros((2, 16000)).at[1, 9600:].set(1.0)
  params = model.init(jax.random.key(0), wave, pad, train=False)["params"]
  out = model.apply({"params": params}, wave, pad, train=False)
  t = build.output_frames(c.model, 16000)
  assert out["logits"].shape == (2, t, 32)
  assert out["hidden_states"].shape == (2, 2, t, 16)  # [L+1, B, T, D]
  valid = (1.0 - np.asarray(out["paddings"])).sum(axis=1)
  np.testing.assert_array_equal(valid, [t, build.output_frames(c.model, 9600)])


def test_vtlp_changes_training_features_only():
  c = _tiny_config(vtlp=True)
  model = build.build_student(c.model, vocab_size=32)
  wave = jnp.asarray(np.random.default_rng(1).normal(size=(2, 8000)).astype(np.float32))
  pad = jnp.zeros((2, 8000))
  params = model.init(jax.random.key(0), wave, pad, train=False)["params"]
  ev = model.apply({"params": params}, wave, pad, train=False)["logits"]
  rngs = lambda k: {"augment": jax.random.key(k), "dropout": jax.random.key(9)}
  tr1 = model.apply({"params": params}, wave, pad, train=True, rngs=rngs(1))["logits"]
  tr1b = model.apply({"params": params}, wave, pad, train=True, rngs=rngs(1))["logits"]
  tr2 = model.apply({"params": params}, wave, pad, train=True, rngs=rngs(2))["logits"]
  np.testing.assert_array_equal(np.asarray(tr1), np.asarray(tr1b))  # seeded
  assert float(jnp.abs(tr1 - ev).max()) > 1e-3
  assert float(jnp.abs(tr1 - tr2).max()) > 1e-3
  with pytest.raises(ValueError, match="min_warp"):
    c.model.vtlp.min_warp = 1.2
    build.build_student(c.model, vocab_size=32)
