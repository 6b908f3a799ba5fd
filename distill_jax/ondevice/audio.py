"""Audio input for the runtime: any file soundfile reads, any rate, mono or stereo.

`load_audio(path, rate)` -> float32 mono [S] at `rate`: channels are averaged (as in training,
`audio/io.py`), other rates are resampled with `resample` (band-limited, FFT based), the result
is clipped to [-1, 1]. Missing, undecodable, empty or non-finite audio raises `AudioError`
whose message starts with the path.

`resample` is the ideal band-limited resampler of the whole signal: rfft, keep (or zero-pad)
the bins below the lower Nyquist, irfft at the new length. The signal is zero-padded on both
sides first so the FFT's periodic wrap-around does not leak its end into its start. Training
audio went through soxr (HQ, a windowed-sinc resampler); the two agree to about -60 dB on
speech-band signals (tests/ondevice/test_audio.py), far below what changes a transcript.
"""

from __future__ import annotations

import math
import os

import numpy as np
import soundfile as sf

_GUARD_SECONDS = 0.05


class AudioError(ValueError):
  """Audio that cannot be used; the message starts with the file or source name."""


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
  """float32 [S] at rate_in -> float32 [round(S * rate_out / rate_in)] at rate_out."""
  x = np.asarray(x, np.float64)
  if rate_in == rate_out:
    return x.astype(np.float32)
  if rate_in <= 0 or rate_out <= 0:
    raise ValueError(f"sample rates must be positive, got {rate_in} -> {rate_out}")
  n = x.shape[0]
  n_out = int(round(n * rate_out / rate_in))
  # Guard and padded length are multiples of q, so both map to whole output samples and the
  # output grid is exactly t = k / rate_out from the first input sample.
  g = math.gcd(rate_in, rate_out)
  q = rate_in // g
  guard = q * math.ceil(_GUARD_SECONDS * rate_in / q)
  total = q * math.ceil((n + 2 * guard) / q)
  m = total // q * (rate_out // g)
  x = np.pad(x, (guard, total - n - guard))
  spec = np.fft.rfft(x)
  k_out = m // 2 + 1
  out_spec = np.zeros(k_out, np.complex128)
  k = min(spec.shape[0], k_out)
  out_spec[:k] = spec[:k]
  if m % 2 == 0 and k == k_out:        # the new Nyquist bin of an even length is real
    out_spec[k_out - 1] = out_spec[k_out - 1].real
  if total % 2 == 0 and k == spec.shape[0] and k < k_out:
    out_spec[k - 1] *= 0.5             # split the old Nyquist bin's energy (real signal)
  y = np.fft.irfft(out_spec, n=m) * (m / total)
  start = guard // q * (rate_out // g)
  return y[start:start + n_out].astype(np.float32)


def to_mono(samples: np.ndarray) -> np.ndarray:
  """[S] or [S, C] -> [S] (mean over channels)."""
  samples = np.asarray(samples, np.float32)
  if samples.ndim == 1:
    return samples
  if samples.ndim != 2:
    raise ValueError(f"audio samples must be [S] or [S, C], got shape {samples.shape}")
  return samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1, dtype=np.float32)


def prepare(samples: np.ndarray, rate: int, sample_rate: int, name: str) -> np.ndarray:
  """Validates decoded samples [S] or [S, C] at `rate`; returns float32 mono [S'] at
  `sample_rate` in [-1, 1]."""
  samples = np.asarray(samples)
  if samples.size == 0 or samples.shape[0] == 0:
    raise AudioError(f"{name}: audio contains no samples")
  if rate <= 0:
    raise AudioError(f"{name}: invalid sample rate {rate}")
  finite = np.isfinite(samples)
  if not finite.all():
    raise AudioError(f"{name}: audio contains {int(finite.size - finite.sum())} non-finite "
                     "sample(s) (NaN or Inf)")
  mono = resample(to_mono(samples), rate, sample_rate)
  if mono.shape[0] == 0:
    raise AudioError(f"{name}: audio too short to resample from {rate} Hz to {sample_rate} Hz")
  return np.clip(mono, -1.0, 1.0).astype(np.float32)


def load_audio(path: str, sample_rate: int = 16000) -> np.ndarray:
  """A file soundfile reads -> float32 mono [S] at `sample_rate` (see the module docstring)."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise AudioError(f"{path}: audio file not found")
  try:
    samples, rate = sf.read(path, dtype="float32", always_2d=True)
  except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError) as e:
    raise AudioError(f"{path}: cannot decode audio: {e}") from e
  return prepare(samples, int(rate), sample_rate, path)
