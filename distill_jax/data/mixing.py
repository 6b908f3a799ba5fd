"""Noisy-speech mixtures for the denoiser: clean speech + noise at a chosen SNR, seeded.

SNR definition (`snr_db`): 10 log10(P_speech / P_noise) with P the mean power over the whole
crop ('rms', the DNS challenge convention) or, for the speech, over its active samples only
('active': |x| within 50 dB of the peak, `audio.degrade.active_power`, closer to the ITU-T
P.56 active speech level used for VoiceBank+DEMAND). `mix_at_snr` hits the asked SNR up to
float rounding (the test checks 0.01 dB).

`draw_mixture(seed, index, ...)` is a pure function of (seed, index): the same pair of seeds
gives the same clean item, noise item, noise offset, SNR and level on any machine, so a test
set is a seed and a list of files.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from distill_jax.audio import degrade

SPEECH_LEVELS = ("rms", "active")


def speech_power(x: np.ndarray, level: str) -> float:
  if level == "rms":
    p = float(np.mean(np.square(x, dtype=np.float64)))
    if p == 0.0:
      raise ValueError("the speech is all zeros: its SNR is undefined")
    return p
  if level == "active":
    return degrade.active_power(np.asarray(x, np.float64))
  raise ValueError(f"speech level {level!r} is not one of {SPEECH_LEVELS}")


def measured_snr_db(speech: np.ndarray, noise: np.ndarray, level: str = "rms") -> float:
  """SNR of a (speech, noise) pair under the definition of `mix_at_snr`."""
  return 10.0 * np.log10(speech_power(speech, level)
                         / float(np.mean(np.square(noise, dtype=np.float64))))


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float,
               level: str = "rms") -> tuple[np.ndarray, np.ndarray]:
  """(noisy, scaled noise), both [S] float64, noisy = speech + g noise with the gain g giving
  `snr_db`. speech, noise: [S] of one length."""
  speech = np.asarray(speech, np.float64)
  noise = np.asarray(noise, np.float64)
  if speech.ndim != 1 or noise.shape != speech.shape:
    raise ValueError(f"mix_at_snr: speech {speech.shape} and noise {noise.shape} must be 1-D "
                     "of one length")
  if not (np.all(np.isfinite(speech)) and np.all(np.isfinite(noise))):
    raise ValueError("mix_at_snr: NaN or Inf in the speech or the noise")
  p_noise = float(np.mean(np.square(noise)))
  if p_noise == 0.0:
    raise ValueError("mix_at_snr: the noise crop is all zeros: its SNR is undefined")
  g = np.sqrt(speech_power(speech, level) / (p_noise * 10.0 ** (snr_db / 10.0)))
  scaled = g * noise
  return speech + scaled, scaled


def noise_crop(noise: np.ndarray, length: int, offset: int) -> np.ndarray:
  """[length] samples of `noise` from `offset`, looping (wrapping around) when it is shorter."""
  if noise.ndim != 1 or noise.shape[0] == 0:
    raise ValueError(f"noise_crop: need a non-empty 1-D noise, got shape {noise.shape}")
  idx = (offset + np.arange(length)) % noise.shape[0]
  return noise[idx]


@dataclasses.dataclass(frozen=True)
class MixPlan:
  """What one mixture is made of (all drawn from (seed, index))."""
  clean: int  # index into the clean list
  noise: int  # index into the noise list
  clean_offset: int  # first sample of the clean crop
  noise_offset: int
  snr_db: float
  level_db: float  # peak-free target: the noisy mixture's RMS in dBFS before clip protection


@dataclasses.dataclass(frozen=True)
class Mixture:
  clean: np.ndarray  # [S] float32, scaled like the noisy one
  noisy: np.ndarray  # [S] float32
  plan: MixPlan
  scale: float  # the gain applied to both (level and clip protection)


def plan_mixture(seed: int, index: int, clean_lengths: Sequence[int],
                 noise_lengths: Sequence[int], length: int,
                 snr_range: tuple[float, float] = (-5.0, 20.0),
                 level_range: tuple[float, float] = (-35.0, -15.0),
                 snr_choices: Sequence[float] = ()) -> MixPlan:
  """Draws one mixture's plan from `np.random.default_rng([seed, index])`.

  SNR: uniform in `snr_range`, or uniform over `snr_choices` when given (test sets: -5/0/5/...).
  """
  if not clean_lengths or not noise_lengths:
    raise ValueError("plan_mixture: need at least one clean and one noise item")
  if snr_range[0] > snr_range[1] or level_range[0] > level_range[1]:
    raise ValueError(f"plan_mixture: snr_range={snr_range}, level_range={level_range}: "
                     "need (low, high)")
  rng = np.random.default_rng([seed, index])
  ci = int(rng.integers(len(clean_lengths)))
  ni = int(rng.integers(len(noise_lengths)))
  c_off = int(rng.integers(max(clean_lengths[ci] - length, 0) + 1))
  n_off = int(rng.integers(noise_lengths[ni]))
  snr = (float(rng.choice(np.asarray(snr_choices, np.float64))) if len(snr_choices)
         else float(rng.uniform(*snr_range)))
  return MixPlan(ci, ni, c_off, n_off, snr, float(rng.uniform(*level_range)))


def make_mixture(clean: np.ndarray, noise: np.ndarray, plan: MixPlan, length: int,
                 level: str = "rms", peak: float = 0.99) -> Mixture:
  """Crops (or zero-pads) the clean item to `length`, crops/loops the noise, mixes at the
  plan's SNR, scales both to the plan's level, and scales down further if the mixture would
  clip (|x| > peak). The same gain goes to clean and noisy, so the SNR is kept."""
  c = np.asarray(clean, np.float64)[plan.clean_offset:plan.clean_offset + length]
  c = np.pad(c, (0, length - c.shape[0]))
  n = noise_crop(np.asarray(noise, np.float64), length, plan.noise_offset)
  noisy, _ = mix_at_snr(c, n, plan.snr_db, level)
  rms = float(np.sqrt(np.mean(noisy ** 2)))
  scale = 10.0 ** (plan.level_db / 20.0) / max(rms, 1e-12)
  top = float(np.max(np.abs(noisy))) * scale
  if top > peak:
    scale *= peak / top
  return Mixture(clean=(c * scale).astype(np.float32), noisy=(noisy * scale).astype(np.float32),
                 plan=plan, scale=scale)


def draw_mixture(seed: int, index: int, cleans: Sequence[np.ndarray],
                 noises: Sequence[np.ndarray], length: int, level: str = "rms",
                 **plan_kwargs) -> Mixture:
  """`plan_mixture` + `make_mixture` over in-memory lists of clean and noise waveforms."""
  plan = plan_mixture(seed, index, [len(c) for c in cleans], [len(n) for n in noises], length,
                      **plan_kwargs)
  return make_mixture(cleans[plan.clean], noises[plan.noise], plan, length, level)


def mixture_batch(seed: int, start: int, batch: int, cleans: Sequence[np.ndarray],
                  noises: Sequence[np.ndarray], length: int, level: str = "rms",
                  **plan_kwargs) -> dict[str, np.ndarray]:
  """Mixtures start .. start + batch - 1 stacked: {'clean', 'noisy': [B, S] float32, 'snr_db':
  [B]}."""
  ms = [draw_mixture(seed, start + i, cleans, noises, length, level, **plan_kwargs)
        for i in range(batch)]
  return dict(clean=np.stack([m.clean for m in ms]), noisy=np.stack([m.noisy for m in ms]),
              snr_db=np.asarray([m.plan.snr_db for m in ms], np.float32))


AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def read_noise_list(path: str) -> list[str]:
  """Noise files: every audio file in a folder (sorted; not recursive), or the lines of a text
  file (one path per line, relative paths against the file's folder, '#' comments)."""
  import os
  if os.path.isdir(path):
    files = sorted(os.path.join(path, f) for f in os.listdir(path)
                   if f.lower().endswith(AUDIO_SUFFIXES))
  elif os.path.isfile(path):
    base = os.path.dirname(os.path.abspath(path))
    with open(path, encoding="utf-8") as f:
      lines = [ln.strip() for ln in f]
    files = [ln if os.path.isabs(ln) else os.path.join(base, ln)
             for ln in lines if ln and not ln.startswith("#")]
    missing = [p for p in files if not os.path.isfile(p)]
    if missing:
      raise ValueError(f"{path}: {len(missing)} listed noise file(s) not found, e.g. "
                       f"{missing[0]}")
  else:
    raise ValueError(f"noise list {path!r}: not a folder nor a file")
  if not files:
    raise ValueError(f"noise list {path!r}: no audio files ({', '.join(AUDIO_SUFFIXES)})")
  return files
