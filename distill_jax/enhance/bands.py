"""Band compression of STFT bins (GTCRN / DeepFilterNet style): the low bins kept one by one,
the bins above pooled into bands equally spaced on the ERB-number scale (Glasberg & Moore 1990,
ERB-number(f) = 21.4 log10(1 + 0.00437 f)).

`band_matrices` returns fixed (not trained) triangular weights:
  analysis  A [F, Fb]: bands = bins @ A, each band the weighted mean of its bins;
  synthesis S [Fb, F]: bins = bands @ S, each bin an interpolation of its neighbouring bands
  (its weights sum to 1), so a constant band mask gives the same constant on every bin.
"""

from __future__ import annotations

import numpy as np


def _erb_number(f: np.ndarray) -> np.ndarray:
  return 21.4 * np.log10(1.0 + 0.00437 * f)


def _inverse_erb_number(e: np.ndarray) -> np.ndarray:
  return (10.0 ** (e / 21.4) - 1.0) / 0.00437


def band_matrices(num_bins: int, num_linear: int, num_erb: int,
                  sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
  """(A [F, Fb], S [Fb, F]) float32 with F = num_bins, Fb = num_linear + num_erb."""
  if not 0 < num_linear < num_bins or num_erb < 2 or num_linear + num_erb > num_bins:
    raise ValueError(f"bands: num_linear={num_linear}, num_erb={num_erb} for {num_bins} bins: "
                     "need 0 < num_linear < bins, num_erb >= 2, num_linear + num_erb <= bins")
  freqs = np.linspace(0.0, sample_rate / 2, num_bins)
  weights = np.zeros((num_bins, num_linear + num_erb))  # triangular memberships
  weights[np.arange(num_linear), np.arange(num_linear)] = 1.0
  lo = _erb_number(freqs[num_linear])
  hi = _erb_number(freqs[-1])
  centres = _erb_number(freqs[num_linear:])
  grid = np.linspace(lo, hi, num_erb)
  step = grid[1] - grid[0]
  for j, c in enumerate(grid):
    weights[num_linear:, num_linear + j] = np.maximum(0.0, 1.0 - np.abs(centres - c) / step)
  if np.any(weights.sum(axis=0) == 0):
    raise ValueError(f"bands: {num_erb} ERB bands over {num_bins - num_linear} bins leaves an "
                     "empty band; use fewer bands")
  analysis = weights / weights.sum(axis=0, keepdims=True)
  synthesis = (weights / weights.sum(axis=1, keepdims=True)).T
  return analysis.astype(np.float32), synthesis.astype(np.float32)


def band_edges_hz(num_bins: int, num_linear: int, num_erb: int,
                  sample_rate: int) -> np.ndarray:
  """[Fb] centre frequency of each band in Hz (for plots and reports)."""
  freqs = np.linspace(0.0, sample_rate / 2, num_bins)
  erb = np.linspace(_erb_number(freqs[num_linear]), _erb_number(freqs[-1]), num_erb)
  return np.concatenate([freqs[:num_linear], _inverse_erb_number(erb)])
