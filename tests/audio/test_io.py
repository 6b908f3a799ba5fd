"""Tests for distill_jax.audio.io: decoding, validation, downmix and resampling."""

import io

import numpy as np
import pytest
import soundfile as sf

from distill_jax.audio.io import AudioError, audio_info, decode_audio_bytes, load_audio


def _sine(freq: float, rate: int, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
  t = np.arange(int(round(rate * seconds))) / rate
  return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(x: np.ndarray, rate: int) -> float:
  spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
  return float(np.fft.rfftfreq(len(x), 1.0 / rate)[np.argmax(spec)])


@pytest.fixture
def rng():
  return np.random.default_rng(1234)


def test_load_16k_wav_is_unchanged_float32(tmp_path):
  x = _sine(440.0, 16000)
  path = str(tmp_path / "a.wav")
  sf.write(path, x, 16000, subtype="FLOAT")
  y = load_audio(path)
  assert y.dtype == np.float32 and y.ndim == 1
  np.testing.assert_array_equal(y, x)


def test_pcm16_is_scaled_to_unit_range(tmp_path):
  x = _sine(300.0, 16000, amp=0.9)
  path = str(tmp_path / "a.wav")
  sf.write(path, x, 16000, subtype="PCM_16")
  y = load_audio(path)
  np.testing.assert_allclose(y, x, atol=1.0 / 32768)
  assert np.abs(y).max() <= 1.0


@pytest.mark.parametrize("rate", [8000, 22050, 44100])
def test_resampled_to_16k_keeps_length_and_frequency(tmp_path, rate):
  freq = 440.0
  path = str(tmp_path / f"sine_{rate}.flac")
  sf.write(path, _sine(freq, rate, seconds=1.0), rate)
  y = load_audio(path)
  assert y.dtype == np.float32
  assert abs(len(y) - 16000) <= 1
  assert abs(_peak_hz(y, 16000) - freq) <= 1.0
  # Amplitude preserved away from the edges (HQ resampler passband is flat at 440 Hz).
  mid = y[2000:-2000]
  assert abs(np.abs(mid).max() - 0.5) < 0.01


def test_resample_to_other_target_rate(tmp_path):
  path = str(tmp_path / "a.wav")
  sf.write(path, _sine(1000.0, 16000), 16000)
  y = load_audio(path, sample_rate=8000)
  assert abs(len(y) - 8000) <= 1
  assert abs(_peak_hz(y, 8000) - 1000.0) <= 1.0


def test_stereo_is_averaged_to_mono(tmp_path):
  left = _sine(440.0, 16000)
  right = _sine(880.0, 16000, amp=0.25)
  path = str(tmp_path / "stereo.wav")
  sf.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
  y = load_audio(path)
  assert y.shape == (16000,)
  np.testing.assert_allclose(y, (left + right) / 2, atol=1e-7)


def test_stereo_44k_is_downmixed_then_resampled(tmp_path):
  x = _sine(440.0, 44100)
  path = str(tmp_path / "stereo.flac")
  sf.write(path, np.stack([x, -x], axis=1), 44100)  # cancels to silence
  y = load_audio(path)
  assert abs(len(y) - 16000) <= 1
  assert np.abs(y).max() < 1e-4


def test_float_file_above_full_scale_is_clipped(tmp_path):
  x = np.array([0.0, 1.5, -2.0, 0.25] * 100, np.float32)
  path = str(tmp_path / "loud.wav")
  sf.write(path, x, 16000, subtype="FLOAT")
  y = load_audio(path)
  assert y.max() == 1.0 and y.min() == -1.0
  np.testing.assert_array_equal(y[3::4], 0.25)


def test_missing_file_names_path(tmp_path):
  path = str(tmp_path / "nope.wav")
  with pytest.raises(AudioError, match="nope.wav: audio file not found"):
    load_audio(path)
  with pytest.raises(AudioError, match="nope.wav: audio file not found"):
    audio_info(path)


def test_directory_is_rejected(tmp_path):
  with pytest.raises(AudioError, match="not a regular file"):
    load_audio(str(tmp_path))


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_corrupt_file_names_path_and_reason(tmp_path, rng, suffix):
  path = tmp_path / f"corrupt{suffix}"
  path.write_bytes(rng.bytes(4096))
  with pytest.raises(AudioError) as e:
    load_audio(str(path))
  msg = str(e.value)
  assert msg.startswith(str(path)), msg
  assert "cannot decode audio" in msg
  assert "Format not recognised" in msg  # libsndfile's reason is quoted.
  assert isinstance(e.value, ValueError)
  with pytest.raises(AudioError, match=f"corrupt\\{suffix}: cannot read audio header"):
    audio_info(str(path))


def test_empty_file_is_corrupt(tmp_path):
  path = tmp_path / "empty.wav"
  path.write_bytes(b"")
  with pytest.raises(AudioError, match="empty.wav: cannot decode audio"):
    load_audio(str(path))


def test_zero_length_wav(tmp_path):
  path = str(tmp_path / "zero.wav")
  sf.write(path, np.zeros((0,), np.float32), 16000)
  with pytest.raises(AudioError, match="zero.wav: audio contains no samples"):
    load_audio(path)
  with pytest.raises(AudioError, match="zero.wav: audio contains no samples"):
    audio_info(path)


def test_nan_and_inf_are_rejected(tmp_path):
  x = _sine(440.0, 16000)
  x[10], x[20] = np.nan, np.inf
  path = str(tmp_path / "nan.wav")
  sf.write(path, x, 16000, subtype="FLOAT")
  with pytest.raises(AudioError, match=r"nan.wav: audio contains 2 non-finite sample\(s\)"):
    load_audio(path)


def test_too_short_to_resample(tmp_path):
  path = str(tmp_path / "one.wav")
  sf.write(path, np.array([0.1], np.float32), 44100, subtype="FLOAT")
  with pytest.raises(AudioError, match="one.wav: audio too short to resample"):
    load_audio(path)


def test_bad_sample_rate_argument(tmp_path):
  with pytest.raises(ValueError, match="sample_rate"):
    load_audio(str(tmp_path / "x.wav"), sample_rate=0)


def test_audio_info_reads_header(tmp_path):
  path = str(tmp_path / "s.flac")
  sf.write(path, np.zeros((22050, 2), np.float32), 22050)
  assert audio_info(path) == (22050, 22050, 2)


def test_decode_bytes_matches_file(tmp_path):
  x = _sine(440.0, 22050)
  path = str(tmp_path / "a.flac")
  sf.write(path, x, 22050)
  with open(path, "rb") as f:
    data = f.read()
  np.testing.assert_array_equal(decode_audio_bytes(data, "utt-1"), load_audio(path))
  np.testing.assert_array_equal(decode_audio_bytes(bytearray(data), "utt-1"), load_audio(path))


def test_decode_bytes_wav_in_memory():
  buf = io.BytesIO()
  x = _sine(200.0, 16000)
  sf.write(buf, np.stack([x, x], axis=1), 16000, format="WAV", subtype="FLOAT")
  y = decode_audio_bytes(buf.getvalue(), "mem.wav")
  np.testing.assert_array_equal(y, x)


def test_decode_bytes_errors_name_the_source(rng):
  with pytest.raises(AudioError, match="utt-7: cannot decode audio: .*Format not recognised"):
    decode_audio_bytes(rng.bytes(2048), "utt-7")
  with pytest.raises(AudioError, match="utt-8: audio bytes are empty"):
    decode_audio_bytes(b"", "utt-8")
  with pytest.raises(AudioError, match=r"utt-9: no audio bytes \(None\)"):
    decode_audio_bytes(None, "utt-9")
  with pytest.raises(AudioError, match="utt-10: expected audio bytes, got str"):
    decode_audio_bytes("RIFF", "utt-10")
  buf = io.BytesIO()
  sf.write(buf, np.zeros((0,), np.float32), 16000, format="WAV")
  with pytest.raises(AudioError, match="utt-11: audio contains no samples"):
    decode_audio_bytes(buf.getvalue(), "utt-11")


def test_truncated_flac_is_an_audio_error_or_shorter(tmp_path):
  """A FLAC cut in the middle either fails cleanly or decodes the frames that survive."""
  path = str(tmp_path / "cut.flac")
  sf.write(path, _sine(440.0, 16000, seconds=2.0), 16000)
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[: len(data) // 2])
  try:
    y = load_audio(path)
  except AudioError as e:
    assert str(e).startswith(path)
  else:
    assert 0 < len(y) <= 32000 and np.all(np.isfinite(y))
