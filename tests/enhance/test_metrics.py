"""enhance/metrics.py: PESQ-WB, STOI/ESTOI, the normalized proxy, named errors."""

import numpy as np
import pytest

from distill_jax.enhance import metrics

SR = 16000


def _speechlike(seed, seconds=2.0):
  """Voiced bursts: harmonics of a gliding 120-220 Hz pitch, 4 Hz syllable envelope."""
  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * SR)) / SR
  f0 = 120 + 100 * (0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t))
  phase = 2 * np.pi * np.cumsum(f0) / SR
  x = sum(np.sin(k * phase) / k for k in range(1, 15))
  env = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 2
  return 0.1 * x * env + 1e-3 * rng.standard_normal(t.shape)


def test_scores_order_clean_above_noisy():
  clean = _speechlike(0)
  noise = np.random.default_rng(1).standard_normal(clean.shape)
  light = clean + 0.01 * noise
  heavy = clean + 0.1 * noise
  p_clean, p_light, p_heavy = (metrics.pesq_wb(clean, x) for x in (clean, light, heavy))
  assert p_clean > 4.0 and p_clean > p_light > p_heavy >= 1.0
  assert metrics.stoi(clean, clean) > 0.99
  assert metrics.stoi(clean, light) > metrics.stoi(clean, heavy)
  assert metrics.estoi(clean, light) > metrics.estoi(clean, heavy)
  q = metrics.quality_proxy("sisdr", np.stack([clean, heavy]), np.stack([light, clean]))
  assert q.shape == (2,) and np.all((0 <= q) & (q <= 1))
  assert metrics.normalized_quality("pesq", clean, clean) > 0.95


def test_bad_input_is_named():
  clean = _speechlike(2)
  with pytest.raises(ValueError, match="16000"):
    metrics.pesq_wb(clean, clean, sample_rate=8000)
  with pytest.raises(ValueError, match="NaN"):
    metrics.stoi(clean, np.full_like(clean, np.nan))
  with pytest.raises(ValueError, match="one length"):
    metrics.si_sdr(clean, clean[:-1])
  with pytest.raises(ValueError, match="STOI needs"):
    metrics.stoi(clean[:1000], clean[:1000])
  with pytest.raises(ValueError, match="pesq_wb"):
    metrics.pesq_wb(np.zeros(SR), np.zeros(SR))
  with pytest.raises(ValueError, match="not one of"):
    metrics.normalized_quality("mos", clean, clean)
