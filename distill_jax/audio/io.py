"""Audio decoding, validation and resampling to the model's sample rate.

Every utterance enters the system through `load_audio` (a file on disk) or `decode_audio_bytes`
(encoded bytes held in memory, e.g. a Hugging Face `datasets` column cast to
`Audio(decode=False)`). Both return a float32 mono waveform `[S]` at `sample_rate` (16 kHz by
default) and apply the same checks, so a bad file fails in one place with one kind of error:

- decoding uses `soundfile` (libsndfile: WAV, FLAC, OGG/Vorbis, Opus, MP3, ...); integer PCM is
  scaled to [-1, 1) by libsndfile;
- a missing file, a file libsndfile cannot decode (libsndfile's reason is quoted), a file without
  samples and a file holding NaN or Inf all raise `AudioError`, whose message starts with the
  path (or the source name given for bytes), so the input pipeline can count the utterance as
  skipped and list it;
- several channels are averaged to mono;
- other sample rates are resampled with `soxr` at "HQ" quality (a windowed-sinc resampler,
  ~-100 dB stop band), after the mono downmix so only one channel is resampled;
- the result is clipped to [-1, 1]: integer PCM already lies there, so this only touches float
  files that exceed full scale and the resampler's small overshoot near full-scale transients.

`load_channels` keeps the file's channels and rate (with the same checks), for file-in,
file-out processing such as the denoiser's. `audio_info` reads only the header (frames, rate,
channels), for manifest builders that need durations without decoding.
"""

from __future__ import annotations

import io
import os
from typing import Any, BinaryIO, Union

import numpy as np
import soundfile as sf
import soxr

DEFAULT_SAMPLE_RATE = 16000
RESAMPLE_QUALITY = "HQ"


class AudioError(ValueError):
  """An audio source that cannot be used; the message starts with the file or source name."""


_Source = Union[str, BinaryIO]


def _check_path(path: str) -> None:
  if not os.path.exists(path):
    raise AudioError(f"{path}: audio file not found")
  if not os.path.isfile(path):
    raise AudioError(f"{path}: not a regular file")


def _check_rate(sample_rate: Any) -> int:
  if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
    raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
  if sample_rate <= 0:
    raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
  return int(sample_rate)


def _read(source: _Source, name: str) -> tuple[np.ndarray, int]:
  """Decodes `source` into ([frames, channels] float32, rate); wraps libsndfile errors."""
  try:
    samples, rate = sf.read(source, dtype="float32", always_2d=True)
  except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError) as e:
    raise AudioError(f"{name}: cannot decode audio: {e}") from e
  return samples, int(rate)


def _finish(samples: np.ndarray, rate: int, name: str, sample_rate: int) -> np.ndarray:
  """Validates decoded [frames, channels] samples, downmixes to mono and resamples."""
  if samples.shape[0] == 0:
    raise AudioError(f"{name}: audio contains no samples")
  if rate <= 0:
    raise AudioError(f"{name}: invalid sample rate {rate} in header")
  if not np.all(np.isfinite(samples)):
    bad = int(np.size(samples) - np.count_nonzero(np.isfinite(samples)))
    raise AudioError(f"{name}: audio contains {bad} non-finite sample(s) (NaN or Inf)")
  if samples.shape[1] == 1:
    mono = samples[:, 0]
  else:
    mono = samples.mean(axis=1, dtype=np.float32)
  if rate != sample_rate:
    mono = soxr.resample(mono, rate, sample_rate, quality=RESAMPLE_QUALITY)
    if mono.shape[0] == 0:
      raise AudioError(
          f"{name}: audio too short to resample from {rate} Hz to {sample_rate} Hz "
          f"({samples.shape[0]} frame(s))")
  mono = np.clip(mono, -1.0, 1.0)
  return np.ascontiguousarray(mono, dtype=np.float32)


def load_audio(path: str, sample_rate: int = DEFAULT_SAMPLE_RATE) -> np.ndarray:
  """Loads an audio file as a validated mono waveform.

  Args:
    path: file readable by libsndfile (WAV, FLAC, OGG, MP3, ...).
    sample_rate: output rate in Hz; other rates are resampled with soxr (HQ).

  Returns:
    float32 [S] in [-1, 1] at `sample_rate`.

  Raises:
    AudioError: the file is missing, cannot be decoded, holds no samples or holds NaN/Inf. The
      message starts with `path`.
  """
  sample_rate = _check_rate(sample_rate)
  path = os.fspath(path)
  _check_path(path)
  samples, rate = _read(path, path)
  return _finish(samples, rate, path, sample_rate)


def load_channels(path: str) -> tuple[np.ndarray, int]:
  """Loads an audio file as it is stored: ([C, S] float32, rate), every channel kept, not
  resampled, with `load_audio`'s checks (missing, undecodable, empty, NaN/Inf: `AudioError`
  starting with `path`). For processing that must give back the input's layout (a denoiser's
  file in, file out)."""
  path = os.fspath(path)
  _check_path(path)
  samples, rate = _read(path, path)
  if samples.shape[0] == 0:
    raise AudioError(f"{path}: audio contains no samples")
  if not np.all(np.isfinite(samples)):
    bad = int(np.size(samples) - np.count_nonzero(np.isfinite(samples)))
    raise AudioError(f"{path}: audio contains {bad} non-finite sample(s) (NaN or Inf)")
  return np.ascontiguousarray(samples.T), rate


def decode_audio_bytes(
    data: bytes, name: str, sample_rate: int = DEFAULT_SAMPLE_RATE) -> np.ndarray:
  """Decodes an encoded audio file held in memory, with the checks of `load_audio`.

  Meant for Hugging Face datasets whose audio column is cast to `Audio(decode=False)`: each row
  then holds {"bytes": ..., "path": ...}; pass the bytes and the path (or id) as `name`.

  Args:
    data: the encoded file's bytes (WAV, FLAC, OGG, MP3, ...).
    name: how to name the source in error messages (original path or utterance id).
    sample_rate: output rate in Hz; other rates are resampled with soxr (HQ).

  Returns:
    float32 [S] in [-1, 1] at `sample_rate`.

  Raises:
    AudioError: no bytes, undecodable bytes, no samples, NaN/Inf. The message starts with `name`.
  """
  sample_rate = _check_rate(sample_rate)
  if data is None:
    raise AudioError(f"{name}: no audio bytes (None)")
  if not isinstance(data, (bytes, bytearray, memoryview)):
    raise AudioError(f"{name}: expected audio bytes, got {type(data).__name__}")
  if len(data) == 0:
    raise AudioError(f"{name}: audio bytes are empty")
  samples, rate = _read(io.BytesIO(bytes(data)), name)
  return _finish(samples, rate, name, sample_rate)


def audio_info(path: str) -> tuple[int, int, int]:
  """Reads an audio file's header without decoding the samples.

  Args:
    path: file readable by libsndfile.

  Returns:
    (num_frames, sample_rate, channels) as stored in the file (before any resampling). For
    compressed formats without a frame count in the header (some MP3s) libsndfile estimates it.

  Raises:
    AudioError: the file is missing, its header cannot be parsed, or it holds no frames. The
      message starts with `path`.
  """
  path = os.fspath(path)
  _check_path(path)
  try:
    info = sf.info(path)
  except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError) as e:
    raise AudioError(f"{path}: cannot read audio header: {e}") from e
  if info.frames <= 0:
    raise AudioError(f"{path}: audio contains no samples")
  if info.samplerate <= 0:
    raise AudioError(f"{path}: invalid sample rate {info.samplerate} in header")
  return int(info.frames), int(info.samplerate), int(info.channels)
