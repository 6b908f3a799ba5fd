"""data/mixing.py: the SNR asked is the SNR measured (0.01 dB), seeds are deterministic."""

import numpy as np
import pytest

from distill_jax.data import mixing


def _speechlike(rng, n, sr=16000):
  """Harmonic tone bursts with silent gaps (the 'active' level differs from the 'rms' one)."""
  t = np.arange(n) / sr
  x = sum(np.sin(2 * np.pi * k * 140 * t) / k for k in range(1, 6))
  env = (np.sin(2 * np.pi * 2.5 * t) > 0.2).astype(float)
  return (0.3 * x * env + 1e-4 * rng.standard_normal(n)).astype(np.float32)


@pytest.mark.parametrize("level", mixing.SPEECH_LEVELS)
@pytest.mark.parametrize("snr", [-5.0, 0.0, 7.5, 20.0])
def test_mix_at_snr_hits_the_snr(level, snr):
  rng = np.random.default_rng(0)
  s, n = _speechlike(rng, 8000), rng.standard_normal(8000) * 0.01
  noisy, scaled = mixing.mix_at_snr(s, n, snr, level)
  np.testing.assert_allclose(noisy - scaled, s, atol=1e-12)
  assert abs(mixing.measured_snr_db(s, scaled, level) - snr) < 0.01


def test_active_level_ignores_silence():
  rng = np.random.default_rng(1)
  s = _speechlike(rng, 16000)
  assert mixing.speech_power(s, "active") > 1.5 * mixing.speech_power(s, "rms")


def test_draw_mixture_is_seeded_and_keeps_the_snr():
  rng = np.random.default_rng(2)
  cleans = [_speechlike(rng, 12000), _speechlike(rng, 5000)]
  noises = [rng.standard_normal(3000).astype(np.float32), rng.standard_normal(20000) * 0.2]
  a = [mixing.draw_mixture(7, i, cleans, noises, 8000) for i in range(12)]
  b = [mixing.draw_mixture(7, i, cleans, noises, 8000) for i in range(12)]
  c = mixing.draw_mixture(8, 0, cleans, noises, 8000)
  for x, y in zip(a, b):
    assert x.plan == y.plan
    np.testing.assert_array_equal(x.noisy, y.noisy)
  assert c.plan != a[0].plan
  assert {m.plan.clean for m in a} == {0, 1} and {m.plan.noise for m in a} == {0, 1}
  for m in a:
    assert m.noisy.shape == (8000,) and m.noisy.dtype == np.float32
    assert -5.0 <= m.plan.snr_db <= 20.0
    assert np.max(np.abs(m.noisy)) <= 0.99 + 1e-6
    snr = mixing.measured_snr_db(m.clean.astype(np.float64),
                                 m.noisy.astype(np.float64) - m.clean)
    assert abs(snr - m.plan.snr_db) < 0.01, (m.plan, snr)


def test_test_set_snr_choices_and_clip_protection():
  rng = np.random.default_rng(3)
  cleans, noises = [_speechlike(rng, 8000)], [rng.standard_normal(8000)]
  batch = mixing.mixture_batch(0, 0, 10, cleans, noises, 4000, snr_choices=(-5, 0, 5, 10, 15),
                               level_range=(0.0, 0.0))  # 0 dBFS RMS: must be scaled down
  assert set(batch["snr_db"].tolist()) <= {-5.0, 0.0, 5.0, 10.0, 15.0}
  assert batch["noisy"].shape == (10, 4000)
  assert np.max(np.abs(batch["noisy"])) <= 0.99 + 1e-6


def test_bad_input_is_named():
  with pytest.raises(ValueError, match="noise crop is all zeros"):
    mixing.mix_at_snr(np.ones(10), np.zeros(10), 0.0)
  with pytest.raises(ValueError, match="speech is all zeros"):
    mixing.mix_at_snr(np.zeros(10), np.ones(10), 0.0)
  with pytest.raises(ValueError, match="NaN"):
    mixing.mix_at_snr(np.full(10, np.nan), np.ones(10), 0.0)
  with pytest.raises(ValueError, match="not one of"):
    mixing.speech_power(np.ones(10), "peak")
  with pytest.raises(ValueError, match="one length"):
    mixing.mix_at_snr(np.ones(10), np.ones(9), 0.0)
