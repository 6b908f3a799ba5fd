"""Tests for distill_jax.audio.features: mel filterbank, log-mel, normalization, SpecAugment.

References are independent: `librosa.filters.mel`, `librosa.stft(center=False)` and a float64
numpy framing. Tolerances: filterbank atol 1e-6 (observed ~4e-9); log-mel atol 1e-4 where the
reference mel energy is >= 1e-5 (10x the log floor) and within 50 dB of its frame's peak
(observed <= 4e-5), and 1e-2 everywhere (observed ~1e-3: near the floor, the float32 FFT's
round-off, which scales with the frame's total energy, dominates).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal

librosa = pytest.importorskip("librosa")

from distill_jax.audio import features as F  # pylint: disable=g-import-not-at-top

SR = 16000
CFG = F.LogMelConfig()
LOG_ATOL = 1e-4
LOG_ATOL_NEAR_FLOOR = 1e-2
REF_MEL_MIN = 1e-5


def _right_paddings(lengths, total):
  return (np.arange(total)[None, :] >= np.asarray(lengths)[:, None]).astype(np.float32)


def _test_signals(total: int, seed: int = 0) -> np.ndarray:
  """[3, total]: tone + noise, linear chirp, white noise."""
  rng = np.random.default_rng(seed)
  t = np.arange(total) / SR
  return np.stack([
      0.3 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(total),
      0.5 * np.sin(2 * np.pi * (100 * t + 3000 * t ** 2)),
      0.2 * rng.standard_normal(total),
  ]).astype(np.float32)


def _librosa_log_mel(x: np.ndarray, config: F.LogMelConfig = CFG):
  """Independent reference: librosa STFT without centring, same periodic Hann window.

  librosa centres a short window inside the n_fft frame, so padding the signal by
  (n_fft - window) / 2 on each side gives frames that cover the same samples as ours (a time
  shift inside the frame changes only the phase, not the power).
  """
  off = (config.n_fft - config.window_length) // 2
  spec = librosa.stft(np.pad(x, (off, off)), n_fft=config.n_fft,
                      hop_length=config.hop_length, win_length=config.window_length,
                      window="hann", center=False)
  fb = librosa.filters.mel(sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.num_mels,
                           fmin=config.fmin, fmax=config.fmax, htk=config.htk,
                           norm=config.mel_norm)
  mel = (fb @ (np.abs(spec) ** 2)).T  # [T, M]
  return np.log(np.maximum(mel, config.log_floor)), mel


def _assert_log_close(actual, ref_log, ref_mel):
  """atol LOG_ATOL where the reference mel energy is >= REF_MEL_MIN and within 50 dB of the
  frame's peak (float32 FFT round-off scales with the frame's energy); looser elsewhere."""
  above = ref_mel >= np.maximum(REF_MEL_MIN, 1e-5 * ref_mel.max(axis=-1, keepdims=True))
  assert above.sum() >= 100
  np.testing.assert_allclose(actual[above], ref_log[above], rtol=0, atol=LOG_ATOL)
  np.testing.assert_allclose(actual, ref_log, rtol=0, atol=LOG_ATOL_NEAR_FLOOR)


# --------------------------------------------------------------------------------------------
# Mel filterbank.


@pytest.mark.parametrize("num_mels,n_fft,fmin,fmax,htk,norm", [
    (80, 512, 0.0, None, False, "slaney"),  # the default
    (128, 512, 0.0, None, False, "slaney"),
    (80, 400, 20.0, 7600.0, True, None),
    (40, 512, 125.0, 7600.0, True, "slaney"),
    (64, 1024, 20.0, None, False, None),
])
def test_mel_filterbank_matches_librosa(num_mels, n_fft, fmin, fmax, htk, norm):
  ours = F.mel_filterbank(num_mels, n_fft, SR, fmin, fmax, htk, norm)
  ref = librosa.filters.mel(sr=SR, n_fft=n_fft, n_mels=num_mels, fmin=fmin, fmax=fmax, htk=htk,
                            norm=norm)
  assert ours.dtype == np.float32 and ours.shape == (num_mels, n_fft // 2 + 1)
  np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)


def test_mel_filterbank_rejects_empty_channels_and_bad_args():
  with pytest.raises(ValueError, match="empty channel"):
    F.mel_filterbank(num_mels=128, n_fft=400, htk=True)
  with pytest.raises(ValueError, match="fmin"):
    F.mel_filterbank(fmin=9000.0)
  with pytest.raises(ValueError, match="norm"):
    F.mel_filterbank(norm="l2")


def test_config_derived_sizes_and_validation():
  assert (CFG.window_length, CFG.hop_length, CFG.n_fft, CFG.num_mels) == (400, 160, 512, 80)
  assert CFG.filterbank().shape == (257, 80)
  assert hash(CFG) == hash(F.LogMelConfig())
  with pytest.raises(ValueError, match="n_fft=256"):
    F.LogMelConfig(n_fft=256)
  with pytest.raises(ValueError, match=r"unknown LogMelConfig field\(s\) \['num_mel'\]"):
    F.LogMelConfig.from_config({"num_mel": 80})
  assert F.LogMelConfig.from_config({"num_mels": 40, "preemphasis": 0.97}).num_mels == 40


# --------------------------------------------------------------------------------------------
# Framing.


@pytest.mark.parametrize("num_samples", [0, 399, 400, 559, 560, 561, 16000, 16001, 24321])
def test_frame_count_formula(num_samples):
  expected = 0 if num_samples < 400 else 1 + (num_samples - 400) // 160
  assert F.num_frames(num_samples) == CFG.num_frames(num_samples) == expected
  x = jax.ShapeDtypeStruct((2, num_samples), jnp.float32)
  feats, fpad = jax.eval_shape(F.log_mel, x, x)
  assert feats.shape == (2, expected, 80) and fpad.shape == (2, expected)


@pytest.mark.parametrize("window,hop,frame_length,total", [
    (400, 160, None, 3210), (400, 160, 512, 3210), (7, 3, 10, 50), (6, 3, None, 20),
    (5, 5, 8, 23), (4, 8, None, 40)])
def test_frame_signal_matches_slicing(window, hop, frame_length, total):
  x = np.random.default_rng(0).standard_normal((2, total)).astype(np.float32)
  frames = np.asarray(F.frame_signal(jnp.asarray(x), window, hop, frame_length))
  t = F.num_frames(total, window, hop)
  length = frame_length or window
  ref = np.zeros((2, t, length), np.float32)
  for i in range(t):
    ref[:, i, :window] = x[:, i * hop:i * hop + window]
  np.testing.assert_array_equal(frames, ref)


def test_frame_paddings_any_padded_sample_pads_the_frame():
  total = 4000
  lengths = [4000, 3000, 400, 399, 0]
  p = _right_paddings(lengths, total)
  p[0, 1234] = 1.0  # a hole inside the first utterance
  fpad = np.asarray(F.frame_paddings(jnp.asarray(p)))
  t = CFG.num_frames(total)
  idx = np.arange(t)[:, None] * 160 + np.arange(400)[None]
  np.testing.assert_array_equal(fpad, p[:, idx].max(-1))
  for i, n in enumerate(lengths[1:], start=1):
    assert (fpad[i] == 0).sum() == CFG.num_frames(n)
    assert np.all(fpad[i, :CFG.num_frames(n)] == 0)
  # Frames 6 and 7 contain sample 1234 (frame t covers [160 t, 160 t + 400)).
  np.testing.assert_array_equal(np.flatnonzero(fpad[0]), [6, 7])


# --------------------------------------------------------------------------------------------
# Log-mel.


def test_log_mel_batch_matches_librosa():
  total = 24000
  lengths = [24000, 17000, 9000]
  x = _test_signals(total)
  p = _right_paddings(lengths, total)
  feats, fpad = jax.jit(F.log_mel)(jnp.asarray(x * (1 - p)), jnp.asarray(p))
  feats, fpad = np.asarray(feats), np.asarray(fpad)
  assert feats.dtype == np.float32 and feats.shape == (3, CFG.num_frames(total), 80)
  for i, n in enumerate(lengths):
    ref_log, ref_mel = _librosa_log_mel(x[i, :n])
    t = ref_log.shape[0]
    assert t == CFG.num_frames(n) == int((fpad[i] == 0).sum())
    _assert_log_close(feats[i, :t], ref_log, ref_mel)
    assert np.all(feats[i, t:] == 0.0) and np.all(fpad[i, t:] == 1.0)


def test_log_mel_matches_float64_numpy_with_preemphasis():
  config = F.LogMelConfig(preemphasis=0.97, htk=True, mel_norm=None, fmin=20.0, fmax=7600.0)
  x = _test_signals(8000, seed=3)
  feats, _ = F.log_mel(jnp.asarray(x), jnp.zeros(x.shape, jnp.float32), config)
  t = config.num_frames(8000)
  frames = np.stack([x[:, i * 160:i * 160 + 400] for i in range(t)], axis=1).astype(np.float64)
  frames = np.concatenate(
      [frames[..., :1] * (1 - 0.97), frames[..., 1:] - 0.97 * frames[..., :-1]], axis=-1)
  window = scipy.signal.get_window("hann", 400)  # periodic
  power = np.abs(np.fft.rfft(frames * window, n=512)) ** 2
  mel = power @ librosa.filters.mel(sr=SR, n_fft=512, n_mels=80, fmin=20.0, fmax=7600.0,
                                    htk=True, norm=None).T.astype(np.float64)
  _assert_log_close(np.asarray(feats), np.log(np.maximum(mel, 1e-6)), mel)


def test_log_mel_padding_invariance():
  """An utterance alone and padded in a batch with a longer one gives identical valid frames."""
  x = _test_signals(30000, seed=7)
  short_len = 12345
  log_mel = jax.jit(F.log_mel)  # same execution mode for both (eager vs jit may differ by 1 ulp)
  alone, fpad_alone = log_mel(jnp.asarray(x[1:2, :short_len]),
                              jnp.zeros((1, short_len), jnp.float32))
  batch = x[:2].copy()
  p = _right_paddings([30000, short_len], 30000)
  batch[1, short_len:] = 123.0  # garbage in the padding must not leak into valid frames
  feats, fpad = log_mel(jnp.asarray(batch), jnp.asarray(p))
  t = CFG.num_frames(short_len)
  assert alone.shape[1] == t and np.all(np.asarray(fpad_alone) == 0)
  assert int((np.asarray(fpad[1]) == 0).sum()) == t
  np.testing.assert_array_equal(np.asarray(feats[1, :t]), np.asarray(alone[0]))
  np.testing.assert_array_equal(np.asarray(feats[1, t:]), 0.0)


def test_log_mel_silence_hits_the_floor():
  x = jnp.zeros((1, 1600), jnp.float32)
  feats, _ = F.log_mel(x, jnp.zeros_like(x))
  np.testing.assert_allclose(np.asarray(feats), np.log(1e-6), rtol=1e-6)


def test_log_mel_dither_needs_rng_and_is_deterministic():
  config = F.LogMelConfig(dither=1e-2)
  x = jnp.zeros((2, 4000), jnp.float32)
  p = jnp.zeros_like(x)
  with pytest.raises(ValueError, match="dither"):
    F.log_mel(x, p, config)
  key = jax.random.key(0)
  a, _ = F.log_mel(x, p, config, key)
  b, _ = F.log_mel(x, p, config, key)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert float(jnp.min(a)) > np.log(1e-6)  # noise lifts silence above the floor


def test_log_mel_rejects_bad_shapes():
  with pytest.raises(ValueError, match=r"\[B, S\]"):
    F.log_mel(jnp.zeros((4000,)), jnp.zeros((4000,)))


# --------------------------------------------------------------------------------------------
# Normalization.


def _features_with_padding(seed=0):
  rng = np.random.default_rng(seed)
  feats = rng.normal(3.0, 2.0, (3, 50, 80)).astype(np.float32)
  fpad = np.zeros((3, 50), np.float32)
  fpad[1, 30:] = 1.0
  fpad[2, :] = 1.0  # all padding
  return feats, fpad


def test_utterance_normalization_ignores_padded_frames():
  feats, fpad = _features_with_padding()
  out = np.asarray(F.normalize_features(jnp.asarray(feats), jnp.asarray(fpad)))
  garbage = feats.copy()
  garbage[fpad > 0] = 1e4
  out2 = np.asarray(F.normalize_features(jnp.asarray(garbage), jnp.asarray(fpad)))
  np.testing.assert_array_equal(out, out2)
  for i, n in [(0, 50), (1, 30)]:
    v = feats[i, :n].astype(np.float64)
    ref = (v - v.mean(0)) / np.sqrt(v.var(0) + 1e-5)
    np.testing.assert_allclose(out[i, :n], ref, atol=1e-5)
    np.testing.assert_allclose(out[i, :n].mean(0), 0.0, atol=1e-5)
  assert np.all(out[1, 30:] == 0.0)
  assert np.all(out[2] == 0.0) and np.all(np.isfinite(out))


def test_global_normalization_and_moment_accumulation():
  feats, fpad = _features_with_padding(1)
  # Accumulate over two "batches" and compare with the statistics of all valid frames.
  parts = [F.feature_moments(jnp.asarray(feats[:1]), jnp.asarray(fpad[:1])),
           F.feature_moments(jnp.asarray(feats[1:]), jnp.asarray(fpad[1:]))]
  mean, std = F.stats_from_moments(*(a + b for a, b in zip(*parts)))
  valid = feats[fpad == 0].astype(np.float64)
  np.testing.assert_allclose(mean, valid.mean(0), rtol=1e-5)
  np.testing.assert_allclose(std, valid.std(0), rtol=1e-4)
  out = np.asarray(F.normalize_features(jnp.asarray(feats), jnp.asarray(fpad), "global",
                                        (mean, std)))
  ref = (feats - mean) / np.sqrt(std.astype(np.float64) ** 2 + 1e-5)
  np.testing.assert_allclose(out[fpad == 0], ref[fpad == 0], atol=1e-5)
  assert np.all(out[fpad > 0] == 0.0)
  with pytest.raises(ValueError, match="needs stats"):
    F.normalize_features(jnp.asarray(feats), jnp.asarray(fpad), "global")
  with pytest.raises(ValueError, match="mode"):
    F.normalize_features(jnp.asarray(feats), jnp.asarray(fpad), "batch")
  with pytest.raises(ValueError, match="no valid frames"):
    F.stats_from_moments(0.0, np.zeros(80), np.zeros(80))


# --------------------------------------------------------------------------------------------
# SpecAugment.


_SPEC_AUG_STATIC = ("num_freq_masks", "freq_mask_width", "num_time_masks", "time_mask_max_ratio",
                    "time_mask_max_width", "time_masks_per_frame", "mask_value")
_spec_augment = jax.jit(F.spec_augment, static_argnames=_SPEC_AUG_STATIC)


def _ones_with_sentinel_padding(lengths, t=300, d=80):
  fpad = _right_paddings(lengths, t)
  feats = np.where(fpad[..., None] > 0, 7.0, 1.0).astype(np.float32) * np.ones((1, 1, d))
  return jnp.asarray(feats, jnp.float32), jnp.asarray(fpad)


def test_spec_augment_masks_stay_in_valid_frames():
  lengths = [300, 200, 41, 0]
  feats, fpad = _ones_with_sentinel_padding(lengths)
  for seed in range(5):
    out = np.asarray(_spec_augment(feats, fpad, jax.random.key(seed)))
    for i, n in enumerate(lengths):
      assert np.all(out[i, n:] == 7.0)  # padded frames untouched
      assert set(np.unique(out[i, :n])) <= {0.0, 1.0}
      # Frequency masks: at most 2 bands of <= 27 channels, identical in every valid frame.
      if n:
        masked_channels = np.all(out[i, :n] == 0.0, axis=0)
        assert masked_channels.sum() <= 2 * 27
      # Time masks: at most 10 masks of <= floor(0.05 n) frames.
      masked_frames = np.all(out[i, :n] == 0.0, axis=1)
      assert masked_frames.sum() <= 10 * int(0.05 * n)


def test_spec_augment_single_time_mask_is_contiguous_and_adaptive():
  lengths = [400, 100, 20]
  feats, fpad = _ones_with_sentinel_padding(lengths, t=400)
  aug = jax.jit(functools.partial(F.spec_augment, num_freq_masks=0, num_time_masks=1,
                                  time_mask_max_ratio=0.1))
  widths = {n: [] for n in lengths}
  for seed in range(40):
    out = np.asarray(aug(feats, fpad, jax.random.key(seed)))
    for i, n in enumerate(lengths):
      masked = np.flatnonzero(np.all(out[i] == 0.0, axis=1))
      if masked.size:
        assert masked.max() < n
        assert masked.max() - masked.min() + 1 == masked.size  # one contiguous band
      widths[n].append(masked.size)
  for n in lengths:
    assert max(widths[n]) <= int(0.1 * n)
  assert max(widths[400]) > 10  # scales with the utterance length


def test_spec_augment_width_range_is_inclusive():
  b, d = 512, 80
  feats = jnp.ones((b, 10, d), jnp.float32)
  fpad = jnp.zeros((b, 10), jnp.float32)
  out = np.asarray(_spec_augment(feats, fpad, jax.random.key(0), num_freq_masks=1,
                                  freq_mask_width=27, num_time_masks=0))
  widths = (out[:, 0, :] == 0.0).sum(axis=1)
  assert widths.min() == 0 and widths.max() == 27
  assert len(np.unique(widths)) == 28


def test_spec_augment_time_mask_cap_and_adaptive_count():
  feats, fpad = _ones_with_sentinel_padding([300, 30], t=300, d=8)
  capped = np.asarray(_spec_augment(feats, fpad, jax.random.key(1), num_freq_masks=0,
                                     num_time_masks=1, time_mask_max_ratio=1.0,
                                     time_mask_max_width=5))
  assert np.all(capped[:, :, 0] == 0.0, axis=0).sum() <= 5
  assert all(np.all(capped[i] == 0.0, axis=1).sum() <= 5 for i in range(2))
  # 0.02 masks per frame: floor(0.6) = 0 masks for 30 frames, up to 6 for 300 frames.
  counts = []
  for seed in range(10):
    out = np.asarray(_spec_augment(feats, fpad, jax.random.key(seed), num_freq_masks=0,
                                     num_time_masks=10, time_mask_max_ratio=0.05,
                                     time_masks_per_frame=0.02))
    assert np.all(out[1, :30] == 1.0)
    counts.append(np.all(out[0] == 0.0, axis=1).sum())
  assert 0 < max(counts) <= 6 * 15


def test_spec_augment_deterministic_per_rng_and_jittable():
  feats, fpad = _ones_with_sentinel_padding([300, 150])
  key = jax.random.key(42)
  out = np.asarray(_spec_augment(feats, fpad, key))  # static_argnames
  assert (out == 0.0).any()
  np.testing.assert_array_equal(np.asarray(_spec_augment(feats, fpad, key)), out)
  # Same masks through a partial with the defaults spelled out.
  partial = jax.jit(functools.partial(
      F.spec_augment, num_freq_masks=2, freq_mask_width=27, num_time_masks=10,
      time_mask_max_ratio=0.05))
  np.testing.assert_array_equal(np.asarray(partial(feats, fpad, key)), out)
  other = np.asarray(_spec_augment(feats, fpad, jax.random.key(43)))
  assert not np.array_equal(other, out)


def test_front_end_pipeline_jits_end_to_end():
  x = _test_signals(16000)
  p = _right_paddings([16000, 12000, 5000], 16000)

  @functools.partial(jax.jit, static_argnames="config")
  def front_end(waveform, paddings, rng, config):
    feats, fpad = F.log_mel(waveform, paddings, config)
    feats = F.normalize_features(feats, fpad)
    return F.spec_augment(feats, fpad, rng), fpad

  feats, fpad = front_end(jnp.asarray(x), jnp.asarray(p), jax.random.key(0), CFG)
  assert feats.shape == (3, 98, 80) and np.all(np.isfinite(np.asarray(feats)))
  assert np.all(np.asarray(feats)[np.asarray(fpad) > 0] == 0.0)


# --------------------------------------------------------------------------------------------
# VTLP.


def test_vtlp_identity_and_endpoints():
  src = np.asarray(F.vtlp_source_bins(jnp.array([1.0, 0.85, 1.15]), 257))
  np.testing.assert_allclose(src[0], np.arange(257), atol=1e-4)
  # Every warp keeps DC at DC and Nyquist at Nyquist and reads increasing positions.
  np.testing.assert_allclose(src[:, 0], 0.0, atol=1e-6)
  np.testing.assert_allclose(src[:, -1], 256.0, atol=1e-3)
  assert np.all(np.diff(src, axis=1) > 0)


def test_vtlp_moves_a_spectral_peak_by_alpha():
  """A tone at 1 kHz reappears at alpha * 1 kHz (below the warp boundary)."""
  sr, n = 16000, 16000
  t = np.arange(n) / sr
  wave = np.sin(2 * np.pi * 1000.0 * t).astype(np.float32)[None].repeat(3, 0)
  frames = F.frame_signal(jnp.asarray(wave), 400, 160, 512)
  power = F._power_spectrum(frames, F.DEFAULT_CONFIG)         # [3, T, 257]
  alpha = jnp.array([1.0, 0.9, 1.1])
  warped = np.asarray(F.vtlp_warp(power, alpha)).mean(axis=1)      # [3, 257]
  hz_per_bin = sr / 512
  peaks = warped.argmax(axis=-1) * hz_per_bin
  # Within one bin (31.25 Hz) of the warped frequency.
  np.testing.assert_allclose(peaks, [1000.0, 900.0, 1100.0], atol=hz_per_bin)


def test_log_mel_with_unit_warp_is_unchanged_and_jittable():
  rng = np.random.default_rng(0)
  wave = jnp.asarray(rng.normal(size=(2, 8000)).astype(np.float32) * 0.1)
  pad = jnp.zeros((2, 8000)).at[1, 5000:].set(1.0)
  ref, _ = F.log_mel(wave, pad)
  fn = jax.jit(lambda w, p, a: F.log_mel(w, p, warp=a))
  got, fpad = fn(wave, pad, jnp.ones((2,)))
  np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=1e-4)
  other, _ = fn(wave, pad, jnp.array([1.1, 0.9]))
  assert np.abs(np.asarray(other - ref)).max() > 0.1
  np.testing.assert_array_equal(np.asarray(other)[np.asarray(fpad) > 0], 0.0)
