"""Whisper's log-mel front end in jnp: jittable, batched, with paddings.

The computation of openai-whisper's `log_mel_spectrogram` and transformers'
`WhisperFeatureExtractor` (tests/audio/test_whisper_features.py checks it against the latter for
80 and 128 mels):

1. Padded samples are zeroed and every row is padded with zeros / trimmed to `num_samples`
   (default 480000 = 30 s at 16 kHz, the window Whisper was trained on; a smaller value gives a
   shortened window, see `models.whisper`).
2. STFT with centre padding: the signal is reflect-padded by n_fft // 2 = 200 samples on each
   side (torch.stft's default), cut into 400-sample frames every 160 samples, windowed with a
   periodic Hann window of 400 samples, `rfft` of 400 points (201 bins), power |X|^2. The last
   frame is dropped, as Whisper does: `num_samples // 160` frames (3000 for 30 s).
3. Slaney-scale, Slaney-normalized mel filterbank, 0 .. 8000 Hz, 80 or 128 filters
   (`features.mel_filterbank`, librosa's construction, built in numpy), on the power spectrum.
4. log10(max(mel, 1e-10)); dynamic-range clamp per utterance at (max - 8), the max taken over
   the whole padded window (transformers does so; the zero padding only ever lowers values);
   then (x + 4) / 4.

Not covered: `do_normalize` (transformers' optional waveform normalization, off in every Whisper
checkpoint) and dither (0 by default).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from distill_jax.audio import features as features_lib

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_SAMPLES = 30 * SAMPLE_RATE  # 480000 samples = 3000 frames
LOG_FLOOR = 1e-10
DYNAMIC_RANGE = 8.0  # in log10 units (80 dB)


@functools.lru_cache(maxsize=8)
def mel_filters(num_mels: int) -> np.ndarray:
  """float32 [201, num_mels] Slaney mel filterbank of Whisper (0 .. 8 kHz, n_fft 400, 16 kHz),
  oriented for `power [..., 201] @ filters`. Read-only (cached)."""
  if num_mels <= 0:
    raise ValueError(f"num_mels={num_mels}: must be positive (Whisper uses 80, or 128 for "
                     "large-v3 and large-v3-turbo)")
  fb = features_lib.mel_filterbank(num_mels, n_fft=N_FFT, sample_rate=SAMPLE_RATE, fmin=0.0,
                                   fmax=SAMPLE_RATE / 2, htk=False, norm="slaney")
  fb = np.ascontiguousarray(fb.T)
  fb.setflags(write=False)
  return fb


@functools.lru_cache(maxsize=1)
def _hann() -> np.ndarray:
  n = np.arange(N_FFT, dtype=np.float64)
  return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / N_FFT)).astype(np.float32)  # periodic


def num_frames(num_samples: int = CHUNK_SAMPLES) -> int:
  """Frames of a window of `num_samples` samples: num_samples // 160 (3000 for 30 s)."""
  return num_samples // HOP_LENGTH


def log_mel_spectrogram(waveform: jax.Array, paddings: jax.Array | None = None, *,
                        num_mels: int = 80,
                        num_samples: int = CHUNK_SAMPLES) -> tuple[jax.Array, jax.Array]:
  """Whisper log-mel features of a padded batch (jit with `num_mels`, `num_samples` static).

  Args:
    waveform: [B, S] float samples at 16 kHz in [-1, 1] (cast to float32).
    paddings: [B, S], 1.0 marks padded samples (right padding); None means all valid.
    num_mels: 80 or 128 (the model's `num_mel_bins`).
    num_samples: the window: every row is zero-padded or trimmed to this many samples
      (480000 = 30 s by default; fewer for shortened windows). At least 201 (the reflect pad).

  Returns:
    features: float32 [B, T, num_mels], T = num_samples // 160 (3000 by default); the model
      input (transformers' `input_features` [B, M, T], transposed).
    frame_paddings: float32 [B, T], 1.0 where the frame's first sample (160 t) is padding or
      past the input, transformers' `attention_mask[:, ::160]` inverted. Whisper attends to
      every frame anyway; this is for callers that need the valid length.
  """
  if waveform.ndim != 2:
    raise ValueError(f"waveform must be [B, S], got shape {waveform.shape}")
  if paddings is not None and paddings.shape != waveform.shape:
    raise ValueError(f"paddings shape {paddings.shape} differs from waveform shape "
                     f"{waveform.shape}")
  if num_samples <= N_FFT // 2:
    raise ValueError(f"num_samples={num_samples}: must be > {N_FFT // 2} (the reflect padding)")
  x = jnp.asarray(waveform, jnp.float32)
  valid = (jnp.ones(x.shape, jnp.float32) if paddings is None
           else 1.0 - jnp.asarray(paddings, jnp.float32))
  x = x * valid
  s = x.shape[1]
  if s < num_samples:
    x = jnp.pad(x, ((0, 0), (0, num_samples - s)))
    valid = jnp.pad(valid, ((0, 0), (0, num_samples - s)))
  else:
    x, valid = x[:, :num_samples], valid[:, :num_samples]
  half = N_FFT // 2
  x = jnp.pad(x, ((0, 0), (half, half)), mode="reflect")
  frames = features_lib.frame_signal(x, N_FFT, HOP_LENGTH)[:, :-1]          # [B, T, 400]
  spec = jnp.fft.rfft(frames * jnp.asarray(_hann()), axis=-1)                # [B, T, 201]
  power = jnp.square(spec.real) + jnp.square(spec.imag)
  mel = jnp.matmul(power, jnp.asarray(mel_filters(num_mels)),
                   precision=jax.lax.Precision.HIGHEST)                      # [B, T, M]
  log_spec = jnp.log10(jnp.maximum(mel, LOG_FLOOR))
  top = jnp.max(log_spec, axis=(1, 2), keepdims=True)
  log_spec = jnp.maximum(log_spec, top - DYNAMIC_RANGE)
  feats = (log_spec + 4.0) / 4.0
  t = num_frames(num_samples)
  frame_paddings = 1.0 - valid[:, ::HOP_LENGTH][:, :t]
  return feats, frame_paddings
