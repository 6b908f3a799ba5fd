"""enhance/train.py with configs/enhance.py: a few steps, reconstruction and GAN."""

import jax
import numpy as np
import pytest

from configs import enhance as enhance_config
from distill_jax.data import mixing
from distill_jax.enhance import train


def _tiny(variant):
  c = enhance_config.get_config(variant)
  c.model.update(window=128, hop=32, num_linear=8, num_erb=8, channels=(4, 8), hidden=16)
  c.loss.resolutions = ((256, 64, 256), (128, 32, 128))
  c.gan.update(mrd_resolutions=((128, 32, 128),), channels=4, proxy="sisdr")
  c.train.update(num_steps=10, warmup_steps=1, lr=1e-2, d_lr=1e-2)
  return c


def _batches(n):
  rng = np.random.default_rng(0)
  t = np.arange(4000) / 16000
  cleans = [np.sin(2 * np.pi * f * t) * np.clip(np.sin(2 * np.pi * 3 * t), 0, None)
            for f in (150.0, 230.0, 310.0)]
  noises = [rng.standard_normal(6000), rng.standard_normal(3000)]
  return [mixing.mixture_batch(5, 2 * i, 2, cleans, noises, 2048) for i in range(n)]


@pytest.mark.parametrize("variant", ["recon", pytest.param("gan", marks=pytest.mark.slow)])
def test_a_few_steps(variant):
  config = _tiny(variant)
  models = train.build_models(config)
  state = train.init_state(config, models, seed=0, segment=2048)
  assert (set(state.d_params) == {"mrd", "metric"}) == (variant == "gan")
  trainer = train.Trainer(config, models)
  g0 = jax.tree_util.tree_map(np.asarray, state.g_params)
  d0 = jax.tree_util.tree_map(np.asarray, state.d_params)
  for batch in _batches(3):
    state, m = trainer.step(state, batch)
    assert all(np.isfinite(float(v)) for v in m.values()), m
  assert int(state.step) == 3 and int(state.skipped) == 0
  moved = jax.tree_util.tree_map(lambda a, b: float(np.abs(a - np.asarray(b)).max()), g0,
                                 state.g_params)
  assert min(jax.tree_util.tree_leaves(moved)) > 0.0  # every generator tensor was updated
  if variant == "gan":
    assert {"adv", "fm", "metric_g", "d_mrd", "d_metric", "q_enhanced"} <= set(m)
    dm = jax.tree_util.tree_map(lambda a, b: float(np.abs(a - np.asarray(b)).max()), d0,
                                state.d_params)
    assert min(jax.tree_util.tree_leaves(dm)) > 0.0
  else:
    assert "adv" not in m


def test_bad_config_is_named():
  with pytest.raises(ValueError, match="configs/enhance.py:gann: give one of"):
    enhance_config.get_config("gann")
  c = _tiny("gan")
  c.gan.update(mrd=False, metric=False)
  with pytest.raises(ValueError, match="at least one discriminator"):
    train.build_models(c)
