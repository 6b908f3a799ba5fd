"""enhance/inference.py on awkward input (issue 27's bad-input list), with a tiny random
denoiser: finite output of the input's layout, or an error naming the problem."""

import numpy as np
import pytest

from configs import enhance as enhance_config
from distill_jax.audio import io as audio_io
from distill_jax.enhance import inference
from distill_jax.enhance import model as model_lib


@pytest.fixture(scope="module")
def tiny():
  c = enhance_config.get_config("recon")
  c.model.update(window=128, hop=32, num_linear=8, num_erb=8, channels=(4, 8), hidden=16)
  model = model_lib.build(c.model)
  return model, model_lib.init_params(model, 0)


def _speechlike(rate, seconds=0.3, channels=1, seed=0):
  rng = np.random.default_rng(seed)
  t = np.arange(int(rate * seconds)) / rate
  x = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
  return np.stack([x + 0.05 * rng.standard_normal(t.shape) for _ in range(channels)])


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
def test_any_rate_comes_back_at_its_rate_and_length(tiny, rate):
  x = _speechlike(rate)
  y, report = inference.enhance_channels(*tiny, x, rate)
  assert y.shape == x.shape and y.dtype == np.float32 and np.all(np.isfinite(y))
  assert report["sample_rate"] == rate and report["samples"] == x.shape[1]


def test_stereo_channels_are_denoised_separately(tiny):
  x = _speechlike(16000, channels=2)
  y, _ = inference.enhance_channels(*tiny, x, 16000)
  y0, _ = inference.enhance_channels(*tiny, x[0], 16000)
  assert y.shape == (2, x.shape[1]) and np.allclose(y[0], y0, atol=1e-6)


def test_clipping_dc_silence_and_a_file_shorter_than_a_frame(tiny):
  model, params = tiny
  x = np.clip(3 * _speechlike(16000)[0], -1, 1)
  y, report = inference.enhance_channels(model, params, x, 16000)
  assert report["clipped_samples"] > 0 and np.all(np.isfinite(y)) and np.max(np.abs(y)) <= 1
  dc = _speechlike(16000)[0] + 0.4
  y, report = inference.enhance_channels(model, params, dc, 16000)
  assert abs(report["dc_offset"][0] - 0.4) < 0.01 and abs(float(np.mean(y[-1600:]))) < 0.05
  y, _ = inference.enhance_channels(model, params, np.zeros(4000), 16000)
  assert np.all(np.isfinite(y)) and np.max(np.abs(y)) < 1e-6
  short = _speechlike(16000)[0][:model.frame.window // 3]
  y, _ = inference.enhance_channels(model, params, short, 16000)
  assert y.shape == short.shape and np.all(np.isfinite(y))


def test_nan_input_is_an_error_and_a_nan_file_names_itself(tiny, tmp_path):
  x = _speechlike(16000)[0]
  x[100] = np.nan
  with pytest.raises(ValueError, match="1 NaN/Inf"):
    inference.enhance_channels(*tiny, x, 16000)
  import soundfile as sf
  path = str(tmp_path / "nan.wav")
  sf.write(path, x.astype(np.float32), 16000, subtype="FLOAT")
  with pytest.raises(audio_io.AudioError, match="nan.wav: audio contains 1 non-finite"):
    audio_io.load_channels(path)


def test_stream_mode_gives_the_whole_utterance_output(tiny):
  x = _speechlike(16000, seconds=0.2)[0]
  whole, _ = inference.enhance_channels(*tiny, x, 16000)
  streamed, _ = inference.enhance_channels(*tiny, x, 16000, stream=True)
  np.testing.assert_allclose(streamed, whole, atol=1e-5)  # float32 order of summation


def test_an_audiogram_adds_the_nalr_gain_in_both_modes(tiny):
  from distill_jax.enhance import nalr
  x = _speechlike(16000, seconds=0.2)[0]
  plain, _ = inference.enhance_channels(*tiny, x, 16000)
  aided, _ = inference.enhance_channels(*tiny, x, 16000, audiogram=nalr.named("moderate"))
  streamed, _ = inference.enhance_channels(*tiny, x, 16000, stream=True,
                                           audiogram=nalr.named("moderate"))
  # The 220 Hz tone gets 0 dB (G(250) = 6.75 + 9.3 - 17 < 0 is set to 0); the broadband noise
  # above it gets 10-30 dB, so the aided output carries more energy.
  assert np.sum(aided ** 2) > np.sum(plain ** 2)
  np.testing.assert_allclose(streamed, aided, atol=1e-4)
