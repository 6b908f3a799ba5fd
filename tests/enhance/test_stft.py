"""enhance/stft.py: perfect reconstruction (offline and streaming), causality, latency."""

import jax
import numpy as np
import pytest

from distill_jax.enhance import stft

# Jitted (spec static): one compilation each instead of op-by-op dispatch.
_stft = jax.jit(stft.stft, static_argnums=1)
_istft = jax.jit(stft.istft, static_argnums=1)

SPECS = [stft.FrameSpec(384, 64), stft.FrameSpec(128, 64), stft.FrameSpec(256, 32)]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"N{s.window}R{s.hop}")
def test_windows_overlap_add_to_one(spec):
  ga, gs = stft.windows(spec)
  frames = 8 + spec.window // spec.hop
  acc = np.zeros(frames * spec.hop + spec.window)
  for m in range(frames):
    acc[m * spec.hop:m * spec.hop + spec.window] += ga * gs
  # Every sample covered by frames on both sides sums to one.
  np.testing.assert_allclose(acc[spec.window:frames * spec.hop], 1.0, atol=1e-12)
  assert np.all(gs[:spec.window - 2 * spec.hop] == 0.0)  # synthesis support is the last 2R


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"N{s.window}R{s.hop}")
def test_offline_perfect_reconstruction(spec):
  x = np.random.default_rng(0).standard_normal((2, 20 * spec.hop)).astype(np.float32)
  xp = np.pad(x, ((0, 0), (0, spec.hop)))  # one more frame completes the last block
  frames = _stft(xp, spec)
  assert frames.shape == (2, 21, spec.num_bins)
  y = _istft(frames, spec)
  np.testing.assert_allclose(np.asarray(y), x, atol=1e-5)  # float32 FFT round trip


def test_streaming_equals_offline_delayed_by_one_hop():
  spec = SPECS[0]
  x = np.random.default_rng(1).standard_normal((1, 12 * spec.hop)).astype(np.float32)
  st = stft.init_stream(1, spec)
  outs = []
  ana = jax.jit(lambda s, b: stft.analysis_step(s, b, spec))
  syn = jax.jit(lambda s, f: stft.synthesis_step(s, f, spec))
  for b in np.split(np.pad(x, ((0, 0), (0, spec.hop))), 13, axis=1):
    st, f = ana(st, b)
    st, o = syn(st, f)
    outs.append(np.asarray(o))
  z = np.concatenate(outs, axis=1)
  np.testing.assert_allclose(z[:, spec.hop:], x, atol=1e-5)
  np.testing.assert_allclose(z[:, :spec.hop], 0.0, atol=1e-6)


def test_frame_is_causal():
  # Frame m must not change when samples after its last one (mR + R - 1) change.
  spec = SPECS[0]
  x = np.random.default_rng(2).standard_normal((1, 10 * spec.hop)).astype(np.float32)
  x2 = x.copy()
  x2[:, 5 * spec.hop:] += 1.0
  a, b = np.asarray(_stft(x, spec)), np.asarray(_stft(x2, spec))
  np.testing.assert_array_equal(a[:, :5], b[:, :5])
  assert np.abs(a[:, 5] - b[:, 5]).max() > 0.1


def test_latency_formula_and_errors():
  assert stft.FrameSpec(384, 64).latency_samples == 127
  assert abs(stft.FrameSpec(384, 64).latency_ms - 7.9375) < 1e-9
  with pytest.raises(ValueError, match="window=100"):
    stft.FrameSpec(100, 64)
  with pytest.raises(ValueError, match="multiple of the hop"):
    stft.stft(np.zeros((1, 100), np.float32), SPECS[0])
