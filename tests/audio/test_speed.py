"""Speed perturbation: against numpy's linear interpolation, a tone's pitch and duration scale
by the factor, rows that would outgrow the buffer are bounded, and it runs under jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.audio import speed

SR = 16000


def _batch(lengths, num_samples, seed=0):
  rng = np.random.RandomState(seed)
  lengths = np.asarray(lengths)
  pad = (np.arange(num_samples)[None] >= lengths[:, None]).astype(np.float32)
  return (rng.randn(len(lengths), num_samples).astype(np.float32) * (1 - pad)), pad


def test_matches_numpy_interpolation_row_by_row():
  lengths, s = [4000, 2800, 1200, 0], 4000
  wav, pad = _batch(lengths, s)
  factors = np.array([1.0, 1.1, 0.9, 1.05], np.float32)
  out, out_pad = jax.jit(speed.speed_perturb)(wav, pad, factors)
  out, out_pad = np.asarray(out), np.asarray(out_pad)
  # Row 0 is full: slowing it down is bounded to factor 1 (it is returned unchanged).
  np.testing.assert_array_equal(out[0], wav[0])
  for b in (1, 2):
    n = int(np.floor((lengths[b] - 1) / factors[b])) + 1
    ref = np.interp(np.arange(n) * np.float32(factors[b]), np.arange(lengths[b]),
                    wav[b, :lengths[b]])
    # float32 positions n * factor: about 1e-4 of a sample at n = 3000.
    np.testing.assert_allclose(out[b, :n], ref, atol=1e-3)
    assert np.all(out_pad[b, :n] == 0) and np.all(out_pad[b, n:] == 1)
    assert np.all(out[b, n:] == 0)
  assert np.all(out_pad[3] == 1) and np.all(out[3] == 0)  # an empty row stays empty


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_a_tone_changes_pitch_and_duration_by_the_factor(factor):
  t = np.arange(SR) / SR
  tone = np.sin(2 * np.pi * 440.0 * t).astype(np.float32)
  s = 2 * SR
  wav = np.zeros((1, s), np.float32)
  wav[0, :SR] = tone
  pad = np.zeros((1, s), np.float32)
  pad[0, SR:] = 1.0
  out, out_pad = speed.speed_perturb(wav, pad, np.array([factor], np.float32))
  n = int((1 - np.asarray(out_pad[0])).sum())
  assert n == int(np.floor((SR - 1) / factor)) + 1
  spectrum = np.abs(np.fft.rfft(np.asarray(out[0, :n]) * np.hanning(n)))
  peak = np.argmax(spectrum) * SR / n
  assert abs(peak - 440.0 * factor) < 2.0, peak


def test_random_factors_stay_in_range_and_depend_on_the_key():
  a = np.asarray(speed.random_factors(jax.random.key(0), 1000, 0.9, 1.1))
  b = np.asarray(speed.random_factors(jax.random.key(1), 1000, 0.9, 1.1))
  assert a.min() >= 0.9 and a.max() <= 1.1 and abs(a.mean() - 1.0) < 0.01
  assert not np.array_equal(a, b)
  bounded = speed.feasible_factors(jnp.full((2,), 0.5), jnp.array([100.0, 1000.0]), 1001)
  np.testing.assert_allclose(bounded, [0.5, 999 / 1000])
