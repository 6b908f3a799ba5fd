"""A trained denoiser applied to real audio: any sample rate, any number of channels, any length.

`load_run(workdir, which)` restores a run's generator (`launch/train_enhance.py` folders).
`enhance_channels(model, params, x, rate)` takes [C, S] at `rate` and gives [C, S] at `rate`:

1. a NaN or Inf sample is an error naming how many (nothing is written);
2. each channel is denoised on its own (a hearing aid has one per ear), so stereo stays stereo;
3. a DC offset is removed by a causal first-order DC blocker (pole 1 - 2 pi 20 Hz / rate; the
   training mixtures have none, and a constant would sit in the lowest STFT bins);
4. other rates are resampled to the model's (soxr HQ) and back; 8 kHz input is band-limited, the
   output too;
5. the length is padded to a whole number of hops, with at least one, and cut back, so a file
   shorter than one frame still comes out with its length;
6. the output is clipped to [-1, 1]; clipped input samples (|x| >= 0.999) are counted in the
   report, not repaired.

`audiogram` adds the NAL-R hearing-loss gains (enhance/nalr.py) to the enhanced spectrum, at no
extra latency. `stream=True` runs the frame-by-frame model (`model.stream`: one hop in, one hop
out, state carried) instead of the whole-utterance forward and drops its R samples of block
delay, so both modes give the same aligned waveform. The report holds the input's rate,
channels, length, DC offset and clipped-sample count.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import soxr

from distill_jax.enhance import model as model_lib
from distill_jax.enhance import nalr
from distill_jax.enhance import train as train_lib

CLIP_LEVEL = 0.999
DC_CUTOFF_HZ = 20.0


def load_run(workdir: str, which: str | int = "best") -> tuple[model_lib.Denoiser, Any,
                                                                ml_collections.ConfigDict]:
  """(generator, its params, the run's config) from a training run folder; `which` is 'best'
  (lowest dev -SI-SDR), 'latest' or a step."""
  config, params = train_lib.restore_generator(workdir, which)
  return model_lib.build(config.model), params, config


def dc_block(x: np.ndarray, rate: int, cutoff_hz: float = DC_CUTOFF_HZ) -> np.ndarray:
  """y[n] = x[n] - x[n-1] + a y[n-1], a = 1 - 2 pi f_c / rate, along the last axis."""
  from scipy import signal
  a = 1.0 - 2.0 * np.pi * cutoff_hz / rate
  return signal.lfilter([1.0, -1.0], [1.0, -a], np.asarray(x, np.float64), axis=-1)


@functools.lru_cache(maxsize=8)
def _forward(model: model_lib.Denoiser, stream: bool):
  if stream:
    hop = model.frame.hop
    return jax.jit(lambda p, x, g: model_lib.stream(model, p, x, g)[:, hop:])
  return jax.jit(lambda p, x, g: model_lib.enhance(model, p, x, g))


def enhance_channels(model: model_lib.Denoiser, params: Any, x: np.ndarray, rate: int,
                     stream: bool = False, audiogram: dict[float, float] | None = None
                     ) -> tuple[np.ndarray, dict[str, Any]]:
  """x: [C, S] (or [S]) float at `rate` -> (enhanced [C, S] float32 at `rate`, report).
  audiogram: {Hz: dB HL}: NAL-R gains (enhance/nalr.py) on the enhanced spectrum."""
  x = np.asarray(x, np.float64)
  mono = x.ndim == 1
  x = x[None] if mono else x
  if x.ndim != 2 or x.shape[1] == 0:
    raise ValueError(f"enhance_channels: need [C, S] audio with S > 0, got shape {x.shape}")
  if rate <= 0:
    raise ValueError(f"enhance_channels: sample rate {rate} must be positive")
  bad = int(x.size - np.count_nonzero(np.isfinite(x)))
  if bad:
    raise ValueError(f"enhance_channels: {bad} NaN/Inf sample(s) in the input")
  report = dict(sample_rate=int(rate), channels=int(x.shape[0]), samples=int(x.shape[1]),
                dc_offset=[float(v) for v in x.mean(axis=1)],
                clipped_samples=int(np.count_nonzero(np.abs(x) >= CLIP_LEVEL)))
  sr, hop = model.frame.sample_rate, model.frame.hop
  y = dc_block(x, rate)
  if rate != sr:
    y = np.stack([soxr.resample(c, rate, sr, quality="HQ") for c in y])
  n = y.shape[1]
  padded = max(-(-n // hop), 1) * hop
  y = np.pad(y, ((0, 0), (0, padded - n))).astype(np.float32)
  gain = (np.ones(model.frame.num_bins, np.float32) if audiogram is None else
          nalr.bin_gains(audiogram, model.frame.num_bins, sr))
  out = np.asarray(_forward(model, stream)(params, jnp.asarray(y), jnp.asarray(gain)),
                   np.float64)[:, :n]
  if rate != sr:
    out = np.stack([soxr.resample(c, sr, rate, quality="HQ") for c in out])
    out = np.pad(out, ((0, 0), (0, max(0, x.shape[1] - out.shape[1]))))[:, :x.shape[1]]
  if not np.all(np.isfinite(out)):
    raise FloatingPointError("enhance_channels: the denoiser produced NaN/Inf")
  out = np.clip(out, -1.0, 1.0).astype(np.float32)
  return (out[0] if mono else out), report
