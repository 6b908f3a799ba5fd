"""Reverberation and noise: the RIR decays at the requested RT60 and has the requested DRR, the
noise reaches the requested SNR and spectral slope, and everything is seeded."""

import numpy as np
import pytest

from distill_jax.audio import degrade

SR = 16000


def _tone(seconds=1.0, silence=0.25):
  t = np.arange(int(seconds * SR)) / SR
  x = 0.5 * np.sin(2 * np.pi * 220 * t) * np.hanning(t.size)
  pad = np.zeros(int(silence * SR))
  return np.concatenate([pad, x, pad])


@pytest.mark.parametrize("rt60", [0.3, 0.8])
def test_rir_decays_60_db_in_rt60(rt60):
  h = degrade.room_impulse_response(np.random.default_rng(0), rt60, drr_db=0.0, sample_rate=SR,
                                    predelay_ms=0.0)
  tail = h[1:]
  # Schroeder backward integration; the slope between -5 and -25 dB, extrapolated to -60 dB
  # (the T20 estimate of ISO 3382).
  edc = 10 * np.log10(np.cumsum(tail[::-1] ** 2)[::-1] / np.sum(tail ** 2))
  t5, t25 = np.argmax(edc <= -5) / SR, np.argmax(edc <= -25) / SR
  assert abs(3.0 * (t25 - t5) - rt60) < 0.1 * rt60


@pytest.mark.parametrize("drr_db", [-3.0, 6.0])
def test_rir_direct_to_reverberant_ratio(drr_db):
  h = degrade.room_impulse_response(np.random.default_rng(1), 0.5, drr_db, SR)
  assert h[0] == 1.0
  assert abs(10 * np.log10(1.0 / np.sum(h[1:] ** 2)) - drr_db) < 1e-9


def test_reverberation_keeps_length_and_timing():
  x = np.zeros(SR)
  x[1000] = 1.0
  h = degrade.room_impulse_response(np.random.default_rng(2), 0.4, 0.0, SR)
  y = degrade.reverberate(x, h)
  assert y.shape == x.shape and np.argmax(np.abs(y)) == 1000
  assert np.max(np.abs(y[:1000])) < 1e-12  # nothing before the direct path (FFT round-off)
  np.testing.assert_allclose(y[1000:1000 + 200], h[:200], atol=1e-12)


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0])
def test_noise_reaches_the_snr_on_active_samples(snr_db):
  x = _tone()
  noise = degrade.colored_noise(np.random.default_rng(3), x.size, "pink")
  y = degrade.add_noise(x, noise, snr_db)
  measured = 10 * np.log10(degrade.active_power(x) / np.mean((y - x) ** 2))
  assert abs(measured - snr_db) < 1e-6
  # Silence is not counted as signal: the active power is that of the tone's support.
  assert degrade.active_power(x) > np.mean(x ** 2)


@pytest.mark.parametrize("color,slope", [("white", 0.0), ("pink", -1.0), ("brown", -2.0)])
def test_noise_color_is_a_power_law(color, slope):
  n = degrade.colored_noise(np.random.default_rng(4), 2 ** 16, color)
  assert abs(np.mean(n)) < 1e-9 and abs(np.std(n) - 1.0) < 1e-9
  f, p = __import__("scipy.signal", fromlist=["welch"]).welch(n, fs=SR, nperseg=4096)
  keep = (f > 50) & (f < 4000)
  fitted = np.polyfit(np.log10(f[keep]), np.log10(p[keep]), 1)[0]
  assert abs(fitted - slope) < 0.15, fitted


def test_degrade_is_seeded_and_records_its_draws():
  cfg = degrade.DegradeConfig()
  x = _tone()
  a, pa = degrade.degrade(x, cfg, seed=7)
  b, pb = degrade.degrade(x, cfg, seed=7)
  c, _ = degrade.degrade(x, cfg, seed=8)
  np.testing.assert_array_equal(a, b)
  assert pa == pb and not np.array_equal(a, c)
  assert a.dtype == np.float32 and a.shape == x.shape and np.max(np.abs(a)) <= 0.99 + 1e-6
  lo, hi = cfg.snr_db_range
  assert lo <= pa["snr_db"] <= hi and pa["noise"] in degrade.NOISE_COLORS
  assert cfg.rt60_range[0] <= pa["rt60"] <= cfg.rt60_range[1]


def test_noise_only_and_reverb_only_configs():
  x = _tone()
  y, p = degrade.degrade(x, degrade.DegradeConfig(rt60_range=(0.0, 0.0), snr_db_range=(10, 10)),
                         seed=0)
  assert "rt60" not in p
  assert abs(10 * np.log10(degrade.active_power(x) / np.mean((y - x) ** 2)) - 10) < 0.01
  _, p = degrade.degrade(x, degrade.DegradeConfig(snr_db_range=None), seed=0)
  assert "snr_db" not in p and "rt60" in p


def test_bad_configs_are_named():
  with pytest.raises(ValueError, match="snr_db_range"):
    degrade.DegradeConfig(snr_db_range=(10, 0))
  with pytest.raises(ValueError, match="noise_colors"):
    degrade.DegradeConfig(noise_colors=("purple",))
  with pytest.raises(KeyError, match="rt_60"):
    degrade.DegradeConfig.from_dict({"rt_60": (0.1, 0.2)})
  with pytest.raises(ValueError, match="all zeros"):
    degrade.add_noise(np.zeros(10), np.ones(10), 10.0)
