"""Acoustic degradations for a target domain: synthetic room reverberation and additive noise.

Pure numpy, seeded, one waveform at a time (data/degraded.py applies them to a manifest):

- `room_impulse_response`: a statistical RIR, the direct path (1.0 at sample 0) followed, after
  a pre-delay, by a diffuse tail of Gaussian noise whose energy decays by 60 dB in `rt60`
  seconds (the exponential decay of Schroeder/Polack's model) and whose level sets the
  direct-to-reverberant ratio `drr_db`.
- `reverberate`: convolution with it (FFT), cut to the input length so the transcript timing
  is unchanged.
- `colored_noise`: white (flat), pink (1/f power) or brown (1/f^2) Gaussian noise, shaped in
  the frequency domain.
- `add_noise`: noise scaled to an exact SNR over the signal's active samples (|x| above -50 dB
  of its peak, so leading and trailing silence does not lower the signal power).
- `degrade`: reverb then noise, with RT60, DRR, SNR and the noise color drawn from the ranges of
  a `DegradeConfig` by a generator seeded per utterance; rescaled when it would clip.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from scipy import signal as sp_signal

NOISE_COLORS = ("white", "pink", "brown")


@dataclasses.dataclass(frozen=True)
class DegradeConfig:
  """Ranges the per-utterance parameters are drawn from (uniformly; colors uniformly too).

  rt60_range: reverberation time in seconds; (0, 0) disables reverberation.
  drr_db_range: direct-to-reverberant energy ratio in dB.
  snr_db_range: signal-to-noise ratio in dB over the active samples; None disables noise.
  noise_colors: subset of NOISE_COLORS.
  predelay_ms: gap between the direct path and the diffuse tail.
  """
  rt60_range: tuple[float, float] = (0.3, 0.9)
  drr_db_range: tuple[float, float] = (-3.0, 6.0)
  snr_db_range: tuple[float, float] | None = (0.0, 15.0)
  noise_colors: tuple[str, ...] = NOISE_COLORS
  predelay_ms: float = 5.0

  def __post_init__(self):
    for name in ("rt60_range", "drr_db_range", "snr_db_range"):
      r = getattr(self, name)
      if r is None and name == "snr_db_range":
        continue
      if len(r) != 2 or not r[0] <= r[1]:
        raise ValueError(f"degrade.{name}={r!r}: need (low, high) with low <= high")
    if self.rt60_range[0] < 0:
      raise ValueError(f"degrade.rt60_range={self.rt60_range!r}: RT60 must be >= 0")
    bad = [c for c in self.noise_colors if c not in NOISE_COLORS]
    if bad or not self.noise_colors:
      raise ValueError(f"degrade.noise_colors={self.noise_colors!r}: choose from {NOISE_COLORS}")
    if self.predelay_ms < 0:
      raise ValueError(f"degrade.predelay_ms={self.predelay_ms}: must be >= 0")

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "DegradeConfig":
    unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
      raise KeyError(f"unknown degrade config key(s) {unknown}; known: "
                     f"{[f.name for f in dataclasses.fields(cls)]}")
    d = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
    return cls(**d)


def room_impulse_response(rng: np.random.Generator, rt60: float, drr_db: float,
                          sample_rate: int = 16000, predelay_ms: float = 5.0) -> np.ndarray:
  """[N] float64 RIR: 1.0 at sample 0, then an exponentially decaying noise tail.

  The tail's energy envelope is exp(-13.8 t / rt60) (60 dB in rt60 seconds) and its total
  energy is 10^(-drr_db / 10) (the direct path's is 1). Length: predelay + 1.2 * rt60.
  """
  if rt60 <= 0:
    return np.ones(1)
  start = int(round(predelay_ms * 1e-3 * sample_rate)) + 1
  n_tail = max(int(1.2 * rt60 * sample_rate), 1)
  t = np.arange(n_tail) / sample_rate
  tail = rng.standard_normal(n_tail) * np.exp(-6.9078 * t / rt60)  # amplitude: half the rate
  tail *= np.sqrt(10.0 ** (-drr_db / 10.0) / np.sum(tail ** 2))
  h = np.zeros(start + n_tail)
  h[0] = 1.0
  h[start:] = tail
  return h


def reverberate(x: np.ndarray, h: np.ndarray) -> np.ndarray:
  """[S] -> [S]: x convolved with h, cut to len(x) (the direct path keeps its timing)."""
  if h.shape[0] == 1:
    return x * h[0]
  return sp_signal.fftconvolve(x, h)[:x.shape[0]]


def colored_noise(rng: np.random.Generator, num_samples: int, color: str) -> np.ndarray:
  """[S] zero-mean unit-variance Gaussian noise with a 1/f^k power spectrum (k = 0, 1, 2)."""
  if color not in NOISE_COLORS:
    raise ValueError(f"noise color {color!r} is not one of {NOISE_COLORS}")
  white = rng.standard_normal(num_samples)
  if color == "white":
    n = white
  else:
    spec = np.fft.rfft(white)
    f = np.arange(spec.shape[0], dtype=np.float64)
    f[0] = 1.0
    spec = spec / (f ** (0.5 if color == "pink" else 1.0))
    spec[0] = 0.0
    n = np.fft.irfft(spec, num_samples)
  n = n - n.mean()
  return n / max(float(np.std(n)), 1e-12)


def active_power(x: np.ndarray, floor_db: float = -50.0) -> float:
  """Mean power of the samples whose magnitude is within `floor_db` of the peak."""
  peak = float(np.max(np.abs(x))) if x.size else 0.0
  if peak == 0.0:
    raise ValueError("the signal is all zeros: its SNR is undefined")
  active = np.abs(x) >= peak * 10.0 ** (floor_db / 20.0)
  return float(np.mean(np.square(x[active])))


def add_noise(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
  """x + g * noise with g such that active_power(x) / mean(g^2 noise^2) = 10^(snr_db / 10)."""
  if noise.shape != x.shape:
    raise ValueError(f"noise shape {noise.shape} != signal shape {x.shape}")
  p_noise = float(np.mean(np.square(noise)))
  g = np.sqrt(active_power(x) / (p_noise * 10.0 ** (snr_db / 10.0)))
  return x + g * noise


def degrade(x: np.ndarray, cfg: DegradeConfig, seed: int,
            sample_rate: int = 16000) -> tuple[np.ndarray, dict[str, Any]]:
  """[S] float -> ([S] float32 degraded, the drawn parameters). Same seed, same output."""
  rng = np.random.default_rng(seed)
  x = np.asarray(x, np.float64)
  params: dict[str, Any] = {}
  rt60 = float(rng.uniform(*cfg.rt60_range))
  drr = float(rng.uniform(*cfg.drr_db_range))
  if rt60 > 0:
    y = reverberate(x, room_impulse_response(rng, rt60, drr, sample_rate, cfg.predelay_ms))
    params.update(rt60=round(rt60, 4), drr_db=round(drr, 3))
  else:
    y = x
  if cfg.snr_db_range is not None:
    snr = float(rng.uniform(*cfg.snr_db_range))
    color = str(cfg.noise_colors[int(rng.integers(len(cfg.noise_colors)))])
    # The SNR is over the clean signal's active samples (the reverberant tail counts as signal).
    y = add_noise(y, colored_noise(rng, y.shape[0], color), snr)
    params.update(snr_db=round(snr, 3), noise=color)
  peak = float(np.max(np.abs(y)))
  if peak > 0.99:
    y = y * (0.99 / peak)
    params["rescaled"] = round(0.99 / peak, 4)
  return y.astype(np.float32), params
