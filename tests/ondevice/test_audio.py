"""Audio input of the runtime: any rate (resampled), stereo (downmixed), bad files named."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import soxr

from distill_jax.ondevice.audio import AudioError, load_audio, resample


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampled_sine_is_the_sine_at_16k(rate):
  t = np.arange(int(1.3 * rate)) / rate
  x = 0.5 * np.sin(2 * np.pi * 440.0 * t)
  y = resample(x.astype(np.float32), rate, 16000)
  assert y.shape[0] == round(x.shape[0] * 16000 / rate)
  want = 0.5 * np.sin(2 * np.pi * 440.0 * np.arange(y.shape[0]) / 16000)
  inner = slice(800, -800)  # the ends see the zero padding's edge (a step)
  assert np.max(np.abs(y[inner] - want[inner])) < 2e-3


def test_resampler_agrees_with_training_soxr(rng):
  """Against soxr HQ (the training pipeline's resampler) on band-limited noise: < -50 dB."""
  x = rng.standard_normal(48000 * 2).astype(np.float32)
  x = soxr.resample(x, 48000, 12000)          # band-limit to < 6 kHz
  x = soxr.resample(x, 12000, 48000).astype(np.float32)
  ours = resample(x, 48000, 16000)
  ref = soxr.resample(x, 48000, 16000, quality="HQ")
  inner = slice(1600, -1600)
  err = np.sqrt(np.mean((ours[inner] - ref[inner]) ** 2) / np.mean(ref[inner] ** 2))
  assert 20 * np.log10(err) < -50


def test_stereo_48k_file_is_downmixed_and_resampled(tmp_path):
  rate = 48000
  t = np.arange(rate) / rate
  left, right = 0.4 * np.sin(2 * np.pi * 300 * t), 0.2 * np.sin(2 * np.pi * 300 * t)
  path = str(tmp_path / "stereo.flac")
  sf.write(path, np.stack([left, right], 1), rate)
  y = load_audio(path, 16000)
  assert y.shape == (16000,) and y.dtype == np.float32
  want = 0.3 * np.sin(2 * np.pi * 300 * np.arange(16000) / 16000)
  assert np.max(np.abs(y[800:-800] - want[800:-800])) < 2e-3


def test_bad_audio_is_named(tmp_path):
  with pytest.raises(AudioError, match="missing.wav: audio file not found"):
    load_audio(str(tmp_path / "missing.wav"))
  corrupt = tmp_path / "corrupt.wav"
  corrupt.write_bytes(b"RIFF\x00\x00not really a wave file")
  with pytest.raises(AudioError, match="corrupt.wav: cannot decode audio"):
    load_audio(str(corrupt))
  empty = str(tmp_path / "empty.wav")
  sf.write(empty, np.zeros((0,), np.float32), 16000)
  with pytest.raises(AudioError, match="empty.wav: audio contains no samples"):
    load_audio(empty)
  nan = str(tmp_path / "nan.wav")
  sf.write(nan, np.array([0.0, np.nan, 0.1], np.float32), 16000, subtype="FLOAT")
  with pytest.raises(AudioError, match="nan.wav: audio contains 1 non-finite"):
    load_audio(nan)
