"""Host-side (numpy) quality metrics of enhanced speech, and the normalized quality proxy the
metric discriminator learns.

- PESQ-WB: ITU-T P.862.2 through the `pesq` package (ludlows, mode 'wb'; without Corrigendum 2,
  so comparable with published VoiceBank+DEMAND figures), MOS-LQO in [1.04, 4.64].
- STOI / ESTOI: `pystoi` (Taal et al. 2011; Jensen & Taal 2016), in [0, 1] (ESTOI may go below).
- SI-SDR in dB (Le Roux et al. 2019), float64.

Inputs are 1-D float waveforms of equal length at `sample_rate`; bad input raises ValueError
naming the problem (including pystoi's "not enough frames" case, which it would otherwise
answer with 1e-5).
"""

from __future__ import annotations

import warnings

import numpy as np

PESQ_WB_RANGE = (1.04, 4.64)  # P.862.2 MOS-LQO mapping limits


def _pair(ref, est, name: str) -> tuple[np.ndarray, np.ndarray]:
  ref = np.asarray(ref, np.float64)
  est = np.asarray(est, np.float64)
  if ref.ndim != 1 or est.shape != ref.shape:
    raise ValueError(f"{name}: need two 1-D waveforms of one length, got {ref.shape} and "
                     f"{est.shape}")
  for what, x in (("reference", ref), ("estimate", est)):
    if not np.all(np.isfinite(x)):
      raise ValueError(f"{name}: the {what} holds NaN or Inf")
  return ref, est


def si_sdr(ref, est, eps: float = 1e-8) -> float:
  """SI-SDR (dB) of `est` against `ref`, both made zero-mean."""
  ref, est = _pair(ref, est, "si_sdr")
  ref = ref - ref.mean()
  est = est - est.mean()
  target = (np.dot(est, ref) / (np.dot(ref, ref) + eps)) * ref
  return float(10 * np.log10((np.sum(target ** 2) + eps) / (np.sum((est - target) ** 2) + eps)))


def pesq_wb(ref, est, sample_rate: int = 16000) -> float:
  """Wide-band PESQ (MOS-LQO). Needs 16 kHz and at least 0.25 s of speech in `ref`."""
  import pesq  # imported here: only evaluation and the PESQ proxy need it
  ref, est = _pair(ref, est, "pesq_wb")
  if sample_rate != 16000:
    raise ValueError(f"pesq_wb: sample_rate={sample_rate}; wide-band PESQ needs 16000")
  if not np.any(ref):
    raise ValueError("pesq_wb: the reference is silent (all zeros)")
  try:
    return float(pesq.pesq(sample_rate, ref, est, "wb"))
  except pesq.PesqError as e:  # e.g. no utterance detected in a silent reference
    raise ValueError(f"pesq_wb: {type(e).__name__}: {e}") from e


def _stoi(ref, est, sample_rate: int, extended: bool, name: str) -> float:
  import pystoi
  ref, est = _pair(ref, est, name)
  with warnings.catch_warnings():
    warnings.simplefilter("error", RuntimeWarning)
    try:
      return float(pystoi.stoi(ref, est, sample_rate, extended=extended))
    except RuntimeWarning as e:
      raise ValueError(f"{name}: {e} ({ref.shape[0] / sample_rate:.2f} s of audio; STOI needs "
                       "about 0.4 s of non-silent speech)") from e


def stoi(ref, est, sample_rate: int = 16000) -> float:
  return _stoi(ref, est, sample_rate, False, "stoi")


def estoi(ref, est, sample_rate: int = 16000) -> float:
  return _stoi(ref, est, sample_rate, True, "estoi")


PROXIES = ("pesq", "stoi", "sisdr")


def normalized_quality(name: str, ref, est, sample_rate: int = 16000) -> float:
  """One utterance's score mapped to [0, 1] (1 = clean):
  'pesq': (PESQ-WB - 1.04) / 3.6; 'stoi': STOI clipped; 'sisdr': (SI-SDR + 10) / 40 clipped
  (-10 dB -> 0, 30 dB -> 1)."""
  if name == "pesq":
    lo, hi = PESQ_WB_RANGE
    v = (pesq_wb(ref, est, sample_rate) - lo) / (hi - lo)
  elif name == "stoi":
    v = stoi(ref, est, sample_rate)
  elif name == "sisdr":
    v = (si_sdr(ref, est) + 10.0) / 40.0
  else:
    raise ValueError(f"quality proxy {name!r} is not one of {PROXIES}")
  return float(np.clip(v, 0.0, 1.0))


def quality_proxy(name: str, refs, ests, sample_rate: int = 16000) -> np.ndarray:
  """[B, S] pairs -> [B] float32 normalized scores (`normalized_quality` per row)."""
  refs, ests = np.asarray(refs), np.asarray(ests)
  if refs.ndim != 2 or refs.shape != ests.shape:
    raise ValueError(f"quality_proxy: need two [B, S] arrays of one shape, got {refs.shape} and "
                     f"{ests.shape}")
  return np.asarray([normalized_quality(name, r, e, sample_rate) for r, e in zip(refs, ests)],
                    np.float32)
