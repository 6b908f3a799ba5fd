"""Tests of Whisper's log-mel front end (distill_jax/audio/whisper_features.py).

Reference: transformers' `WhisperFeatureExtractor` (its PyTorch STFT path when torch is
installed). Tolerance: ATOL = 1e-4 max absolute difference in the final feature domain (after
the (x + 4) / 4 scaling), for 80 and 128 mels and lengths 0.3 s, 3.0037 s, 29 s and 31 s
(trimmed) in one padded batch. The filterbank is checked against librosa (1e-6).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from distill_jax.audio import whisper_features as wf
from tests.models.whisper_tiny import hf_fixture  # noqa: F401  pylint: disable=unused-import

ATOL = 1e-4  # max |ours - transformers| after (x + 4) / 4.
SR = 16000
LENGTHS = (4800, 48059, 29 * SR, 31 * SR)  # 0.3 s, 3.0037 s, 29 s, 31 s (trimmed to 30 s)

_features = jax.jit(wf.log_mel_spectrogram, static_argnames=("num_mels", "num_samples"))


def _waves(lengths=LENGTHS, seed=0) -> list[np.ndarray]:
  """Chirps + noise under a slow envelope: a wide dynamic range, so the max - 8 clamp acts."""
  rng = np.random.RandomState(seed)
  out = []
  for n in lengths:
    t = np.arange(n) / SR
    x = 0.3 * np.sin(2 * np.pi * 300 * t * (1 + 0.5 * t)) + 0.02 * rng.randn(n)
    out.append((x * np.exp(-((t - t.mean()) ** 2) / 4.0)).astype(np.float32))
  return out


def _batch(waves) -> tuple[np.ndarray, np.ndarray]:
  s = max(len(x) for x in waves)
  x = np.zeros((len(waves), s), np.float32)
  pad = np.ones_like(x)
  for i, w in enumerate(waves):
    x[i, :len(w)] = w
    pad[i, :len(w)] = 0.0
  x[pad > 0] = 0.7  # garbage in the padding: must be ignored
  return x, pad


@pytest.mark.torch
@pytest.mark.parametrize("num_mels", [80, 128])
def test_matches_transformers_feature_extractor(hf, num_mels):
  waves = _waves()
  extractor = hf.WhisperFeatureExtractor(feature_size=num_mels)
  ref = extractor(waves, sampling_rate=SR, return_tensors="np", return_attention_mask=True)
  x, pad = _batch(waves)
  feats, frame_pad = _features(x, pad, num_mels=num_mels)
  feats = np.asarray(feats)
  assert feats.shape == (len(waves), 3000, num_mels) and feats.dtype == np.float32
  diff = np.abs(feats.transpose(0, 2, 1) - ref["input_features"])
  for i, n in enumerate(LENGTHS):
    assert diff[i].max() < ATOL, f"{n} samples: max |diff| {diff[i].max():.2e}"
  np.testing.assert_array_equal(1.0 - np.asarray(frame_pad), ref["attention_mask"])


@pytest.mark.torch
def test_shortened_window_matches_transformers_max_length(hf):
  """num_samples=80000 (5 s) = the extractor with max_length=80000: 500 frames, the clamp over
  the 5 s window."""
  waves = _waves((4800, 48059, 29 * SR))
  ref = hf.WhisperFeatureExtractor(feature_size=80)(
      waves, sampling_rate=SR, return_tensors="np", max_length=80000)
  x, pad = _batch(waves)
  feats, frame_pad = _features(x, pad, num_mels=80, num_samples=80000)
  assert feats.shape == (3, 500, 80) and frame_pad.shape == (3, 500)
  np.testing.assert_allclose(np.asarray(feats).transpose(0, 2, 1), ref["input_features"],
                             atol=ATOL, rtol=0)
  assert np.asarray(frame_pad)[0].sum() == 500 - 30 and np.asarray(frame_pad)[2].sum() == 0


def test_filterbank_matches_librosa():
  librosa = pytest.importorskip("librosa", reason="the reference filterbank")
  for m in (80, 128):
    ref = librosa.filters.mel(sr=SR, n_fft=400, n_mels=m, dtype=np.float64)
    np.testing.assert_allclose(wf.mel_filters(m), ref.T, atol=1e-6, rtol=0)
    assert wf.mel_filters(m).shape == (201, m)


def test_padding_and_batching_do_not_change_an_utterance():
  """An utterance alone (no paddings) and inside a padded batch with a longer one: identical."""
  waves = _waves((16000, 40000), seed=3)
  x, pad = _batch(waves)
  batched, _ = _features(x, pad, num_mels=80, num_samples=48000)
  alone, frame_pad = _features(waves[0][None], None, num_mels=80, num_samples=48000)
  np.testing.assert_array_equal(np.asarray(batched)[0], np.asarray(alone)[0])
  assert np.asarray(frame_pad)[0].sum() == 300 - 100


def test_silence_and_errors():
  feats, _ = _features(np.zeros((1, 1000), np.float32), None, num_mels=80, num_samples=8000)
  # log10(1e-10) = -10 everywhere, the clamp leaves it: (-10 + 4) / 4.
  np.testing.assert_allclose(np.asarray(feats), -1.5, atol=1e-6)
  with pytest.raises(ValueError, match=r"waveform must be \[B, S\]"):
    wf.log_mel_spectrogram(np.zeros(100, np.float32))
  with pytest.raises(ValueError, match="paddings shape"):
    wf.log_mel_spectrogram(np.zeros((1, 100), np.float32), np.zeros((1, 99), np.float32))
  with pytest.raises(ValueError, match="num_samples=100"):
    wf.log_mel_spectrogram(np.zeros((1, 100), np.float32), num_samples=100)
  assert wf.num_frames() == 3000 and wf.num_frames(80000) == 500
