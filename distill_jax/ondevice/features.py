"""The student's training features in numpy: log-mel + per-utterance normalization.

The same maths as `distill_jax/audio/features.py` (`log_mel` then `normalize_features` in
'utterance' mode, as `models/student.py` applies them at inference), rewritten without JAX:
frames of `window_length` samples every `hop_length` (no centre padding, T = 1 + (S - W) // H),
periodic Hann window zero-padded to n_fft, |rfft|^2, librosa-style mel filterbank (Slaney or
HTK scale, Slaney or no norm), natural log of max(mel, log_floor), then each channel's mean
and variance over the utterance's frames: (x - mean) / sqrt(var + 1e-5).

Spectra and statistics are computed in float64 and rounded to float32 once, so these features
are at least as accurate as the float32 JAX ones; tests/ondevice checks them equal within 1e-5
(normalized features) and the filterbank equal bit for bit. Dither and VTLP are training-only
and not applied (as in the student's inference path).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

NORM_EPS = 1e-5
_FIELDS = ("sample_rate", "num_mels", "window_ms", "hop_ms", "n_fft", "preemphasis", "dither",
           "fmin", "fmax", "htk", "mel_norm", "log_floor")


def _hz_to_mel(freqs, htk: bool) -> np.ndarray:
  freqs = np.asarray(freqs, dtype=np.float64)
  if htk:
    return 2595.0 * np.log10(1.0 + freqs / 700.0)
  f_sp, min_log_hz = 200.0 / 3, 1000.0
  min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
  return np.where(freqs >= min_log_hz,
                  min_log_mel + np.log(np.maximum(freqs, min_log_hz) / min_log_hz) / logstep,
                  freqs / f_sp)


def _mel_to_hz(mels, htk: bool) -> np.ndarray:
  mels = np.asarray(mels, dtype=np.float64)
  if htk:
    return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
  f_sp, min_log_hz = 200.0 / 3, 1000.0
  min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
  return np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)),
                  f_sp * mels)


def mel_filterbank(num_mels: int, n_fft: int, sample_rate: int, fmin: float,
                   fmax: float | None, htk: bool, norm: str | None) -> np.ndarray:
  """float32 [M, n_fft // 2 + 1] triangular filters, computed in float64 and rounded once: the
  project's one implementation (`audio/features.mel_filterbank` validates and calls it)."""
  fmax = sample_rate / 2.0 if fmax is None else fmax
  fft_freqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
  mel_edges = np.linspace(_hz_to_mel(fmin, htk), _hz_to_mel(fmax, htk), num_mels + 2)
  hz_edges = _mel_to_hz(mel_edges, htk)
  fdiff = np.diff(hz_edges)
  ramps = hz_edges[:, None] - fft_freqs[None, :]
  lower = -ramps[:-2] / fdiff[:-1, None]
  upper = ramps[2:] / fdiff[1:, None]
  weights = np.maximum(0.0, np.minimum(lower, upper))
  if norm == "slaney":
    weights *= (2.0 / (hz_edges[2:] - hz_edges[:-2]))[:, None]
  elif norm is not None:
    raise ValueError(f"feature_config.mel_norm must be 'slaney' or None, got {norm!r}")
  return weights.astype(np.float32)


class FeatureExtractor:
  """waveform [S] float32 at `sample_rate` -> normalized log-mel features [T, num_mels]."""

  def __init__(self, config: Mapping[str, Any]):
    unknown = sorted(set(config) - set(_FIELDS))
    if unknown:
      raise ValueError(f"feature_config: unknown field(s) {unknown}; known: {list(_FIELDS)}")
    c = {"sample_rate": 16000, "num_mels": 80, "window_ms": 25.0, "hop_ms": 10.0, "n_fft": 512,
         "preemphasis": 0.0, "dither": 0.0, "fmin": 0.0, "fmax": None, "htk": False,
         "mel_norm": "slaney", "log_floor": 1e-6}
    c.update(config)
    self.config = c
    self.sample_rate = int(c["sample_rate"])
    self.window_length = int(round(self.sample_rate * c["window_ms"] / 1000.0))
    self.hop_length = int(round(self.sample_rate * c["hop_ms"] / 1000.0))
    self.n_fft = int(c["n_fft"])
    if not 0 < self.window_length <= self.n_fft or self.hop_length <= 0:
      raise ValueError(f"feature_config: window {self.window_length} / hop {self.hop_length} "
                       f"samples do not fit n_fft={self.n_fft}")
    self.preemphasis = float(c["preemphasis"])
    self.log_floor = float(c["log_floor"])
    self.num_mels = int(c["num_mels"])
    fb = mel_filterbank(self.num_mels, self.n_fft, self.sample_rate, float(c["fmin"]),
                        None if c["fmax"] is None else float(c["fmax"]), bool(c["htk"]),
                        c["mel_norm"])
    self.filterbank = fb.T.astype(np.float64)                    # [K, M]
    n = np.arange(self.window_length, dtype=np.float64)
    hann = (0.5 - 0.5 * np.cos(2.0 * np.pi * n / self.window_length)).astype(np.float32)
    self.window = hann.astype(np.float64)                        # periodic Hann, as float32

  def num_frames(self, num_samples: int) -> int:
    if num_samples < self.window_length:
      return 0
    return 1 + (num_samples - self.window_length) // self.hop_length

  def log_mel(self, waveform: np.ndarray) -> np.ndarray:
    """[S] -> float32 [T, M] log-mel energies (not normalized); T may be 0."""
    x = np.asarray(waveform, np.float32).astype(np.float64)
    if x.ndim != 1:
      raise ValueError(f"waveform must be [S] (mono), got shape {x.shape}")
    t = self.num_frames(x.shape[0])
    if t == 0:
      return np.zeros((0, self.num_mels), np.float32)
    idx = (np.arange(t)[:, None] * self.hop_length + np.arange(self.window_length)[None, :])
    frames = x[idx]                                                # [T, W]
    if self.preemphasis:
      prev = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
      frames = frames - self.preemphasis * prev
    spec = np.fft.rfft(frames * self.window, n=self.n_fft, axis=-1)
    power = spec.real ** 2 + spec.imag ** 2
    mel = power @ self.filterbank
    return np.log(np.maximum(mel, self.log_floor)).astype(np.float32)

  def __call__(self, waveform: np.ndarray) -> np.ndarray:
    """[S] -> float32 [T, M] normalized features; raises if the audio is shorter than a frame."""
    feats = self.log_mel(waveform)
    if feats.shape[0] == 0:
      raise ValueError(f"audio of {np.shape(waveform)[-1]} samples is shorter than one "
                       f"feature frame ({self.window_length} samples at {self.sample_rate} Hz)")
    return normalize(feats)


def normalize(features: np.ndarray) -> np.ndarray:
  """Per-utterance mean/variance normalization of [T, M] (all frames valid) -> float32."""
  x = np.asarray(features, np.float32).astype(np.float64)
  mean = x.mean(axis=0, keepdims=True)
  var = np.square(x - mean).mean(axis=0, keepdims=True)
  return ((x - mean) / np.sqrt(var + NORM_EPS)).astype(np.float32)
