"""NAL-R hearing-loss gains (Byrne & Dillon 1986) from an audiogram, applied in the denoiser's
STFT so the gain stage adds no latency.

  G(f) = 0.05 (H(500) + H(1000) + H(2000)) + 0.31 H(f) + k(f)   [dB], negative gains set to 0,

with H the hearing threshold in dB HL and k = -17, -8, 1, -1, -2, -2 dB at 250, 500, 1000, 2000,
4000 and 6000 Hz (the prescription the Clarity challenge's baseline hearing aid applies,
`clarity.enhancer.nalr`). `bin_gains` interpolates G linearly in dB over log frequency onto the
STFT bins (held flat below 250 Hz and above 6 kHz) and returns linear amplitude gains [F]; a
hearing aid's FIR realisation of the same curve (pyclarity's 220-tap linear-phase design) would
add 6.9 ms at 16 kHz, which the 10 ms budget does not have.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

FREQS = (250, 500, 1000, 2000, 4000, 6000)
BIAS_DB = (-17.0, -8.0, 1.0, -1.0, -2.0, -2.0)


def nalr_gains_db(audiogram: Mapping[float, float]) -> np.ndarray:
  """audiogram {Hz: dB HL} holding at least FREQS (others ignored) -> gains [6] dB at FREQS."""
  missing = [f for f in FREQS if f not in audiogram]
  if missing:
    raise ValueError(f"nalr: the audiogram has no threshold at {missing} Hz (needs {FREQS})")
  h = np.asarray([float(audiogram[f]) for f in FREQS])
  if not np.all(np.isfinite(h)) or np.any(h < -20) or np.any(h > 130):
    raise ValueError(f"nalr: thresholds {h.tolist()} dB HL outside [-20, 130]")
  x = 0.05 * (audiogram[500] + audiogram[1000] + audiogram[2000])
  return np.maximum(x + 0.31 * h + np.asarray(BIAS_DB), 0.0)


def bin_gains(audiogram: Mapping[float, float], num_bins: int,
              sample_rate: int = 16000) -> np.ndarray:
  """Linear amplitude gains [num_bins] for an rfft of 2 (num_bins - 1) points."""
  g_db = nalr_gains_db(audiogram)
  freqs = np.linspace(0.0, sample_rate / 2, num_bins)
  logf = np.log(np.clip(freqs, FREQS[0], FREQS[-1]))
  return (10.0 ** (np.interp(logf, np.log(FREQS), g_db) / 20.0)).astype(np.float32)


def parse_audiogram(text: str) -> dict[float, float]:
  """'250:20,500:25,...' (Hz:dB HL) -> {250.0: 20.0, ...}; a malformed item is named."""
  out = {}
  for item in (s.strip() for s in text.split(",") if s.strip()):
    f, sep, v = item.partition(":")
    try:
      if not sep:
        raise ValueError
      out[float(f)] = float(v)
    except ValueError:
      raise ValueError(f"audiogram item {item!r}: expected HZ:DB_HL") from None
  return out


# Three audiograms of the Clarity challenge's kind (dB HL at FREQS), for HASPI and examples.
AUDIOGRAMS: dict[str, Sequence[float]] = {
    "mild": (15, 20, 25, 35, 45, 50),
    "moderate": (30, 35, 45, 55, 65, 70),
    "sloping": (10, 15, 30, 50, 70, 80),
}


def named(name: str) -> dict[float, float]:
  if name not in AUDIOGRAMS:
    raise ValueError(f"audiogram {name!r}: choose from {sorted(AUDIOGRAMS)}")
  return dict(zip(FREQS, AUDIOGRAMS[name]))
