"""Evaluation of the denoiser on a fixed, seeded set of mixtures, per test SNR.

`dev_set` draws `n` mixtures per SNR from (seed, index) (data/mixing.py), so every evaluation
of a run and every system compared sees the same audio. `evaluate` enhances them with the
whole-utterance forward and reports, per SNR and overall, SI-SDR of noisy and enhanced (and
the improvement), and optionally ESTOI and PESQ-WB (host-side, slower).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from distill_jax.data import mixing
from distill_jax.enhance import metrics


def dev_set(seed: int, cleans: Sequence[np.ndarray], noises: Sequence[np.ndarray],
            snrs: Sequence[float], per_snr: int, length: int,
            level: str = "active") -> dict[float, dict[str, np.ndarray]]:
  """{snr: {'clean', 'noisy': [n, length]}}; mixture i of SNR j uses index j * per_snr + i."""
  out = {}
  for j, snr in enumerate(snrs):
    out[float(snr)] = mixing.mixture_batch(seed, j * per_snr, per_snr, cleans, noises, length,
                                           level, snr_choices=(float(snr),))
  return out


def evaluate(enhance_fn: Callable[[np.ndarray], np.ndarray],
             sets: dict[float, dict[str, np.ndarray]], sample_rate: int = 16000,
             with_estoi: bool = True, with_pesq: bool = False) -> dict[str, Any]:
  """enhance_fn: noisy [n, S] -> enhanced [n, S] (numpy). Returns flat {'snr{v}/name': mean}
  plus overall means under 'all/name'."""
  rows: dict[str, list[float]] = {}
  for snr, batch in sets.items():
    est = np.asarray(enhance_fn(batch["noisy"]))
    if not np.all(np.isfinite(est)):
      raise FloatingPointError(f"evaluate: the enhanced audio at {snr} dB holds NaN or Inf")
    names = {}
    for c, x, y in zip(batch["clean"], batch["noisy"], est):
      names.setdefault("sisdr_noisy", []).append(metrics.si_sdr(c, x))
      names.setdefault("sisdr", []).append(metrics.si_sdr(c, y))
      if with_estoi:
        names.setdefault("estoi_noisy", []).append(metrics.estoi(c, x, sample_rate))
        names.setdefault("estoi", []).append(metrics.estoi(c, y, sample_rate))
      if with_pesq:
        names.setdefault("pesq_noisy", []).append(metrics.pesq_wb(c, x, sample_rate))
        names.setdefault("pesq", []).append(metrics.pesq_wb(c, y, sample_rate))
    names["sisdr_improvement"] = list(np.subtract(names["sisdr"], names["sisdr_noisy"]))
    for k, v in names.items():
      rows.setdefault(f"snr{snr:g}/{k}", []).extend(v)
      rows.setdefault(f"all/{k}", []).extend(v)
  return {k: float(np.mean(v)) for k, v in rows.items()}
