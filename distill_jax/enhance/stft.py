"""Causal low-latency STFT / iSTFT with asymmetric (dual) windows, offline and streaming.

A frame holds the last `N` input samples (the analysis window, long: good frequency
resolution); frames advance by a hop of `R` samples; the synthesis window is non-zero only on
the last `2R` samples of the frame (short: low latency). Windows (Mauler & Martin 2007;
Wang, Wichern, Watanabe, Le Roux 2022, arXiv 2204.09911):

  analysis  g_a[n] = sqrt(hann_{2(N-R)}[n])        for n in [0, N-R)      (long rising half)
                   = sqrt(hann_{2R}[n - N + 2R])   for n in [N-R, N)      (short falling half)
  synthesis g_s[n] = hann_{2R}[n - N + 2R] / g_a[n] for n in [N-2R, N), 0 before,

with periodic Hann windows. Since hann_{2R} overlap-adds to 1 at hop R, sum_m g_a g_s (shifted
by mR) = 1 at every sample: perfect reconstruction. N = 2R gives the symmetric sqrt-Hann pair.

Framing (causal): frame m covers input samples [mR + R - N, mR + R) (zeros before 0), i.e. the
frame that ends with hop block m. Its synthesis part covers [mR - R, mR + R); output block k
(samples [kR, kR + R)) is complete once frame k + 1 has been analysed.

Latency. Output sample n is complete when input sample (floor(n / R) + 2) R - 1 has arrived, so
the algorithmic latency is

  latency = 2R - 1 + L R  samples  (worst case over a block; ~ the synthesis window length 2R),

with L the model's lookahead in frames (0 for the causal denoiser). At 16 kHz with R = 64
(4 ms hop) and any N: 127 samples = 7.94 ms. In the streaming API one call takes hop block b and
returns output block b - 1: the returned stream is the offline output delayed by exactly R
samples, and the other R - 1 samples of latency are the buffering of one block.

Shapes: waveforms [B, S] float32 with S a multiple of R; spectra [B, T, F] complex64 with
F = N // 2 + 1 (the FFT size is N).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class FrameSpec:
  """window: analysis window length N (samples); hop: R. Needs N >= 2R and N % R == 0."""
  window: int = 384
  hop: int = 64
  sample_rate: int = 16000

  def __post_init__(self):
    if self.hop <= 0 or self.window < 2 * self.hop or self.window % self.hop:
      raise ValueError(f"FrameSpec(window={self.window}, hop={self.hop}): need hop > 0, "
                       "window >= 2 * hop and window a multiple of hop")

  @property
  def num_bins(self) -> int:
    return self.window // 2 + 1

  @property
  def latency_samples(self) -> int:
    """Algorithmic latency of the framing alone (no lookahead): 2R - 1 samples."""
    return 2 * self.hop - 1

  @property
  def latency_ms(self) -> float:
    return 1000.0 * self.latency_samples / self.sample_rate


def _hann(length: int) -> np.ndarray:
  """Periodic Hann window [length] (overlap-adds to 1 at hop length / 2)."""
  return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)


def windows(spec: FrameSpec) -> tuple[np.ndarray, np.ndarray]:
  """(analysis g_a [N], synthesis g_s [N]) float64, as in the module docstring."""
  n, r = spec.window, spec.hop
  ga = np.zeros(n)
  ga[:n - r] = np.sqrt(_hann(2 * (n - r))[:n - r])
  ga[n - r:] = np.sqrt(_hann(2 * r)[r:])
  gs = np.zeros(n)
  h = _hann(2 * r)
  tail = ga[n - 2 * r:]
  gs[n - 2 * r:] = np.where(tail > 0, h / np.where(tail > 0, tail, 1.0), 0.0)
  return ga, gs


def _check_wave(x: Array, spec: FrameSpec) -> None:
  if x.ndim != 2 or x.shape[1] % spec.hop:
    raise ValueError(f"waveform shape {x.shape}: need [B, S] with S a multiple of the hop "
                     f"{spec.hop}")


def stft(x: Array, spec: FrameSpec) -> Array:
  """Causal analysis. x: [B, S] (S % R == 0) -> [B, S // R, F] complex64; frame m ends with
  input sample mR + R - 1."""
  _check_wave(x, spec)
  n, r = spec.window, spec.hop
  ga = jnp.asarray(windows(spec)[0], jnp.float32)
  xp = jnp.pad(x.astype(jnp.float32), ((0, 0), (n - r, 0)))
  num = x.shape[1] // r
  idx = np.arange(num)[:, None] * r + np.arange(n)[None, :]  # [T, N]
  return jnp.fft.rfft(xp[:, idx] * ga, axis=-1)


def synthesis_segments(spec_frames: Array, spec: FrameSpec) -> Array:
  """[B, T, F] -> [B, T, 2R]: each frame's windowed inverse on its last 2R samples (the only
  ones the synthesis window keeps)."""
  n, r = spec.window, spec.hop
  gs = jnp.asarray(windows(spec)[1][n - 2 * r:], jnp.float32)
  return jnp.fft.irfft(spec_frames, n=n, axis=-1)[..., n - 2 * r:] * gs


def istft(spec_frames: Array, spec: FrameSpec) -> Array:
  """Overlap-add inverse of `stft`. [B, T, F] -> [B, (T - 1) R]: block k = samples [kR, kR+R)
  needs frames k and k + 1, so the last block of the input is only returned by a call that
  has one more frame (pad the input with R zeros; `enhance.model.enhance` does)."""
  r = spec.hop
  seg = synthesis_segments(spec_frames, spec)  # [B, T, 2R], frame m on [mR - R, mR + R)
  blocks = seg[:, 1:, :r] + seg[:, :-1, r:]  # block k = first half of k+1 + second of k
  b, t = blocks.shape[:2]
  return blocks.reshape(b, t * r)


# -------------------------------------------------------------------------------- streaming

def init_stream(batch: int, spec: FrameSpec) -> dict[str, Array]:
  """Streaming state: `frame` [B, N] the last N input samples, `tail` [B, R] the second half
  of the previous synthesis segment."""
  return dict(frame=jnp.zeros((batch, spec.window), jnp.float32),
              tail=jnp.zeros((batch, spec.hop), jnp.float32))


def analysis_step(state: dict[str, Array], block: Array,
                  spec: FrameSpec) -> tuple[dict[str, Array], Array]:
  """One hop in. block: [B, R] -> (state, [B, F] complex64 spectrum of the new frame)."""
  if block.ndim != 2 or block.shape[1] != spec.hop:
    raise ValueError(f"stream block shape {block.shape}: need [B, {spec.hop}]")
  frame = jnp.concatenate([state["frame"][:, spec.hop:], block.astype(jnp.float32)], axis=1)
  ga = jnp.asarray(windows(spec)[0], jnp.float32)
  return dict(state, frame=frame), jnp.fft.rfft(frame * ga, axis=-1)


def synthesis_step(state: dict[str, Array], frame_spec: Array,
                   spec: FrameSpec) -> tuple[dict[str, Array], Array]:
  """One frame out. frame_spec: [B, F] -> (state, [B, R]): the block that ends one hop before
  the newest input sample (offline output delayed by R samples)."""
  seg = synthesis_segments(frame_spec[:, None, :], spec)[:, 0]  # [B, 2R]
  out = seg[:, :spec.hop] + state["tail"]
  return dict(state, tail=seg[:, spec.hop:]), out
