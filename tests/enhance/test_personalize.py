"""enhance/personalize.py: only the adapters move, the merged model is the same network, and a
few steps on one situation lower its loss."""

import jax
import numpy as np
import pytest

from configs import enhance as enhance_config
from distill_jax.adapters import lora
from distill_jax.data import mixing
from distill_jax.enhance import losses
from distill_jax.enhance import model as model_lib
from distill_jax.enhance import personalize


def _data():
  rng = np.random.default_rng(0)
  t = np.arange(16000) / 16000
  clean = [0.3 * np.sin(2 * np.pi * f * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
           for f in (180.0, 260.0)]
  hum = [0.2 * np.sin(2 * np.pi * 1500 * t) + 0.05 * rng.standard_normal(t.shape)]
  return [c.astype(np.float32) for c in clean], [h.astype(np.float32) for h in hum]


def test_adapters_learn_the_situation_and_leave_the_base_alone():
  c = enhance_config.get_config("recon")
  c.model.update(window=128, hop=32, num_linear=8, num_erb=8, channels=(4, 8), hidden=16)
  model = model_lib.build(c.model)
  base = model_lib.init_params(model, 0)
  frozen = jax.tree_util.tree_map(np.array, base)
  cleans, noises = _data()
  adapters, log = personalize.personalize(model, base, cleans, noises, steps=12, batch_size=2,
                                          segment=2048, lr=1e-2,
                                          resolutions=((256, 64, 256),))
  assert len(log) == 12 and all(np.isfinite(r["loss"]) for r in log)
  # Batches differ (SNR, crops): compare on one fixed set of the situation's mixtures instead.
  fixed = mixing.mixture_batch(99, 0, 4, cleans, noises, 2048, "active")

  def loss(params):
    est = model_lib.enhance(model, params, fixed["noisy"])
    return float(losses.multi_resolution_stft_loss(est, fixed["clean"], ((256, 64, 256),))["loss"])

  assert loss(lora.merge_lora(base, adapters)) < 0.95 * loss(base)
  jax.tree_util.tree_map(np.testing.assert_array_equal, base, frozen)  # base untouched
  merged = lora.merge_lora(base, adapters)
  assert jax.tree_util.tree_structure(merged) == jax.tree_util.tree_structure(base)
  n = sum(x.size for x in jax.tree_util.tree_leaves(adapters))
  assert 0 < n < sum(x.size for x in jax.tree_util.tree_leaves(base))


def test_bad_arguments_are_named():
  c = enhance_config.get_config("recon")
  c.model.update(window=128, hop=32, num_linear=8, num_erb=8, channels=(4, 8), hidden=16)
  model = model_lib.build(c.model)
  base = model_lib.init_params(model, 0)
  cleans, noises = _data()
  with pytest.raises(ValueError, match="segment 100 is not a multiple of the hop 32"):
    personalize.personalize(model, base, cleans, noises, steps=1, batch_size=1, segment=100)
  with pytest.raises(ValueError, match="steps=0"):
    personalize.personalize(model, base, cleans, noises, steps=0, batch_size=1, segment=64)
