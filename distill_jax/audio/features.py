"""Student front end: log-mel features, mean/variance normalization and SpecAugment.

All functions except `mel_filterbank` are pure functions over `jax.Array`s and can be jitted
(pass `config` and the SpecAugment sizes as static arguments). Paddings follow the optax
convention: 1.0 marks a padded sample or frame, 0.0 a valid one.

Log-mel (`log_mel`, configured by `LogMelConfig`):

- 25 ms frames (400 samples at 16 kHz) every 10 ms (160 samples), **no centre padding**: a
  waveform of S >= 400 samples gives T = 1 + (S - 400) // 160 frames (0 frames if S < 400), and
  frame t covers samples [160 t, 160 t + 400).
- periodic Hann window of the frame length (`scipy.signal.get_window('hann', 400)`, librosa's
  default), zero-padded to `n_fft` = 512; power spectrum |rfft|^2 (no magnitude, no scaling);
  mel filterbank applied to the power; natural log with a floor: log(max(mel, 1e-6)).
- the mel filterbank is librosa's default construction: Slaney mel scale with Slaney ("constant
  area") normalization, fmin = 0 Hz, fmax = sample_rate / 2. The DC bin gets zero weight anyway
  (every triangle starts at zero at its lower edge), so fmin = 0 loses nothing against 20 Hz.
  HTK scale and unnormalized triangles are available through the config.
- pre-emphasis is **off** by default (0.0), as in librosa/Whisper/ESPnet front ends: the log-mel
  energies are then exactly librosa's, and the normalization that follows removes most of the
  spectral tilt pre-emphasis would correct. When set (Kaldi uses 0.97) it is applied inside each
  frame, Kaldi-style (x[0] - c x[0], x[n] - c x[n-1]), so a frame still depends on its own
  samples only.
- dither (Gaussian noise of std `dither` in waveform units, added before framing) is off by
  default; when on, `log_mel` needs an `rng`.
- **Frame padding rule**: a frame is padding if ANY of its samples is padding
  (`frame_paddings`). Valid frames therefore never see padded samples, so an utterance gives
  bit-for-bit the same valid frames alone or padded inside a batch with a longer one (when both
  run jitted; eager op-by-op and jitted results may differ by an ulp). For the usual
  right-padded batch, a valid utterance of n >= 400 samples keeps exactly 1 + (n - 400) // 160
  valid frames. Features of padded frames are set to 0.

Speed: framing does not gather with a [T, 400] index array. The waveform is cut into hop-sized
blocks by a reshape, [B, S] -> [B, N, 160]; block k of frame t is block t + k, zero-padded to
its place in an n_fft-long frame, and the three pieces are summed, which XLA fuses into one
elementwise loop that writes the FFT input (already 512 long, so `rfft` needs no padding copy).
Concatenating the shifted views instead was measurably slower on XLA:CPU (a concat along the
minor axis is not fused well); an index-array gather was about as fast as this version on CPU.
The same block trick gives the frame paddings with a max over blocks. The DFT is one 512-point
`rfft`; the mel projection is a [B T, 257] x [257, 80] matmul at HIGHEST precision.

Normalization (`normalize_features`): per-utterance mean/variance over valid frames only
(utterance CMVN) or global statistics computed beforehand (`feature_moments` +
`stats_from_moments` accumulate them over a data set); padded frames stay 0.

SpecAugment (`spec_augment`): frequency masks of width U{0..F} and adaptive time masks in the
style of Lingvo / ESPnet: each utterance's maximum time-mask width is `time_mask_max_ratio` times
its own valid length (optionally capped by `time_mask_max_width`), and, with
`time_masks_per_frame` > 0, the number of time masks also grows with the length (capped by the
static `num_time_masks`). Masks are built by comparing an iota with per-utterance start/width
arrays, so shapes stay static and nothing is sliced dynamically. Masked entries are set to 0,
the mean of normalized features; time masks lie inside the valid frames and padded frames are
never modified. Time warping is not implemented.

Vocal tract length perturbation (`vtlp_warp`, Jaitly & Hinton 2013): each utterance's linear
power spectrum is read at warped frequencies before the mel projection, so its formants and
harmonics move by a factor alpha (alpha > 1: a shorter vocal tract, higher voice). The warp is
piecewise linear (Kaldi's VTLN shape): the output bin at frequency f takes the input at f / alpha
up to a boundary b = 0.875 * Nyquist * min(alpha, 1), then a straight line that meets Nyquist at
Nyquist, so no band is pushed off the top or left empty. It is applied per utterance inside
`log_mel` (`warp`), keeps every shape, and is a stand-in for new speakers when the training
voices are few.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Literal, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
import scipy.signal

from distill_jax.ondevice import features as ondevice_features


# --------------------------------------------------------------------------------------------
# Mel filterbank (numpy, built once per configuration).


def mel_filterbank(
    num_mels: int = 80,
    n_fft: int = 512,
    sample_rate: int = 16000,
    fmin: float = 0.0,
    fmax: Optional[float] = None,
    htk: bool = False,
    norm: Optional[str] = "slaney",
) -> np.ndarray:
  """Triangular mel filterbank, the construction of `librosa.filters.mel`.

  Args:
    num_mels: number of mel channels M.
    n_fft: FFT size; the filterbank covers its K = n_fft // 2 + 1 non-negative frequency bins.
    sample_rate: in Hz.
    fmin: lowest band edge in Hz.
    fmax: highest band edge in Hz; None means sample_rate / 2.
    htk: HTK mel scale (2595 log10(1 + f / 700)) instead of Slaney's (linear below 1 kHz).
    norm: "slaney" scales each triangle by 2 / bandwidth (constant area); None leaves peaks at 1.

  Returns:
    float32 [M, K] weights (librosa's orientation; multiply a power spectrum [..., K] by its
    transpose). Computed in float64 and rounded once.

  Raises:
    ValueError: bad arguments, or a configuration with an empty channel (a mel band narrower
      than the FFT bin spacing), which would give a constant feature.
  """
  if num_mels <= 0 or n_fft <= 0 or sample_rate <= 0:
    raise ValueError(
        f"num_mels, n_fft and sample_rate must be positive, got {num_mels}, {n_fft}, "
        f"{sample_rate}")
  if fmax is None:
    fmax = sample_rate / 2.0
  if not 0.0 <= fmin < fmax <= sample_rate / 2.0:
    raise ValueError(f"need 0 <= fmin < fmax <= sample_rate / 2, got fmin={fmin}, fmax={fmax}")
  if norm not in ("slaney", None):
    raise ValueError(f"norm must be 'slaney' or None, got {norm!r}")
  # The one implementation of the filters (numpy only, shared with the JAX-free runtime).
  weights = ondevice_features.mel_filterbank(num_mels, n_fft, sample_rate, fmin, fmax, htk, norm)
  empty = np.flatnonzero(weights.max(axis=1) <= 0)
  if empty.size:
    raise ValueError(
        f"mel filterbank has empty channel(s) {empty.tolist()} for num_mels={num_mels}, "
        f"n_fft={n_fft}, sample_rate={sample_rate}, fmin={fmin}, fmax={fmax}, htk={htk}: "
        "use fewer mels or a larger n_fft")
  return weights


@functools.lru_cache(maxsize=16)
def _cached_filterbank(num_mels, n_fft, sample_rate, fmin, fmax, htk, norm) -> np.ndarray:
  fb = mel_filterbank(num_mels, n_fft, sample_rate, fmin, fmax, htk, norm)
  fb = np.ascontiguousarray(fb.T)  # [K, M]
  fb.setflags(write=False)
  return fb


@functools.lru_cache(maxsize=16)
def _cached_window(length: int) -> np.ndarray:
  window = scipy.signal.get_window("hann", length, fftbins=True).astype(np.float32)
  window.setflags(write=False)
  return window


# --------------------------------------------------------------------------------------------
# Configuration.


@dataclasses.dataclass(frozen=True)
class LogMelConfig:
  """Log-mel front-end settings (hashable, so it can be a static jit argument).

  Attributes:
    sample_rate: waveform rate in Hz.
    num_mels: number of mel channels (feature dimension).
    window_ms: frame length in ms (25 ms = 400 samples at 16 kHz).
    hop_ms: frame shift in ms (10 ms = 160 samples at 16 kHz).
    n_fft: FFT size, >= the frame length (frames are zero-padded to it).
    preemphasis: per-frame pre-emphasis coefficient; 0.0 (default) turns it off.
    dither: std of Gaussian noise added to the waveform (waveform units); 0.0 turns it off.
    fmin: lowest mel band edge in Hz.
    fmax: highest mel band edge in Hz; None means sample_rate / 2.
    htk: HTK mel scale instead of Slaney's.
    mel_norm: "slaney" (constant-area triangles) or None.
    log_floor: mel energies are floored at this value before the natural log.
  """

  sample_rate: int = 16000
  num_mels: int = 80
  window_ms: float = 25.0
  hop_ms: float = 10.0
  n_fft: int = 512
  preemphasis: float = 0.0
  dither: float = 0.0
  fmin: float = 0.0
  fmax: Optional[float] = None
  htk: bool = False
  mel_norm: Optional[str] = "slaney"
  log_floor: float = 1e-6

  def __post_init__(self):
    if self.window_length <= 0 or self.hop_length <= 0:
      raise ValueError(
          f"window_ms={self.window_ms} and hop_ms={self.hop_ms} must give at least one sample "
          f"at sample_rate={self.sample_rate}")
    if self.window_length > self.n_fft:
      raise ValueError(
          f"n_fft={self.n_fft} is shorter than the window ({self.window_length} samples)")
    if not 0.0 <= self.preemphasis < 1.0:
      raise ValueError(f"preemphasis must be in [0, 1), got {self.preemphasis}")
    if self.dither < 0.0:
      raise ValueError(f"dither must be >= 0, got {self.dither}")
    if self.log_floor <= 0.0:
      raise ValueError(f"log_floor must be > 0, got {self.log_floor}")
    self.filterbank()  # Fail early on a bad mel configuration.

  @property
  def window_length(self) -> int:
    """Frame length in samples."""
    return int(round(self.sample_rate * self.window_ms / 1000.0))

  @property
  def hop_length(self) -> int:
    """Frame shift in samples."""
    return int(round(self.sample_rate * self.hop_ms / 1000.0))

  def num_frames(self, num_samples: int) -> int:
    """T = 1 + (S - window) // hop for S >= window, else 0."""
    return num_frames(num_samples, self.window_length, self.hop_length)

  def filterbank(self) -> np.ndarray:
    """float32 [K, M] mel weights (transposed librosa layout), cached and read-only."""
    return _cached_filterbank(self.num_mels, self.n_fft, self.sample_rate, float(self.fmin),
                              None if self.fmax is None else float(self.fmax), self.htk,
                              self.mel_norm)

  @classmethod
  def from_config(cls, config: Mapping[str, Any] | Any) -> "LogMelConfig":
    """Builds from a dict or an `ml_collections.ConfigDict`; unknown keys raise naming them."""
    if hasattr(config, "to_dict"):
      config = config.to_dict()
    config = dict(config)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(config) - known)
    if unknown:
      raise ValueError(f"unknown LogMelConfig field(s) {unknown}; known: {sorted(known)}")
    return cls(**config)


DEFAULT_CONFIG = LogMelConfig()


# --------------------------------------------------------------------------------------------
# Framing.


def num_frames(num_samples: int, window_length: int = 400, hop_length: int = 160) -> int:
  """Number of frames without centre padding: 1 + (S - window) // hop, or 0 if S < window."""
  if num_samples < window_length:
    return 0
  return 1 + (num_samples - window_length) // hop_length


def _hop_blocks(x: jax.Array, window_length: int, hop_length: int,
                pad_value: float) -> tuple[jax.Array, int]:
  """[..., S] -> ([..., N, hop] hop-aligned blocks, T) with N = T - 1 + ceil(window / hop).

  Blocks past the end of the signal are filled with `pad_value`; frames never read them: the
  last frame ends at (T - 1) hop + window <= S.
  """
  s = x.shape[-1]
  t = num_frames(s, window_length, hop_length)
  n = t - 1 + -(-window_length // hop_length)
  need = n * hop_length
  if need > s:
    widths = [(0, 0)] * (x.ndim - 1) + [(0, need - s)]
    x = jnp.pad(x, widths, constant_values=pad_value)
  else:
    x = x[..., :need]
  return x.reshape(*x.shape[:-1], n, hop_length), t


def frame_signal(x: jax.Array, window_length: int = 400, hop_length: int = 160,
                 frame_length: Optional[int] = None) -> jax.Array:
  """Cuts [..., S] into overlapping frames (no centre padding), without a gather.

  Frame t holds x[..., t * hop : t * hop + window_length], followed by zeros up to
  `frame_length`. The signal is reshaped into hop-sized blocks; each block k of a frame is
  zero-padded to its place in the frame and the pieces are summed, which XLA fuses into a single
  elementwise loop writing the frames once (an FFT input already padded to n_fft).

  Args:
    x: [..., S].
    window_length: samples per frame.
    hop_length: frame shift.
    frame_length: output frame length >= window_length (default window_length).

  Returns:
    [..., T, frame_length], T = num_frames(S, window_length, hop_length).
  """
  frame_length = window_length if frame_length is None else frame_length
  if frame_length < window_length:
    raise ValueError(f"frame_length={frame_length} < window_length={window_length}")
  if num_frames(x.shape[-1], window_length, hop_length) == 0:
    return jnp.zeros((*x.shape[:-1], 0, frame_length), x.dtype)
  blocks, t = _hop_blocks(x, window_length, hop_length, 0.0)
  lead = [(0, 0)] * (blocks.ndim - 1)
  out = None
  for k in range(-(-window_length // hop_length)):
    start = k * hop_length
    size = min(hop_length, window_length - start)
    piece = jnp.pad(blocks[..., k:k + t, :size],
                    lead + [(start, frame_length - start - size)])
    out = piece if out is None else out + piece
  return out


def frame_paddings(paddings: jax.Array, config: LogMelConfig = DEFAULT_CONFIG) -> jax.Array:
  """Frame paddings from sample paddings: a frame is padding if ANY of its samples is.

  Args:
    paddings: [B, S], 1.0 marks padded samples.
    config: gives the frame length and shift.

  Returns:
    [B, T] with T = config.num_frames(S), same dtype as `paddings`: the max of the paddings
    over each frame's samples.
  """
  w, h = config.window_length, config.hop_length
  if num_frames(paddings.shape[-1], w, h) == 0:
    return jnp.zeros((*paddings.shape[:-1], 0), paddings.dtype)
  blocks, t = _hop_blocks(paddings, w, h, 1.0)
  q, r = divmod(w, h)
  block_max = blocks.max(axis=-1)  # [B, N]
  out = block_max[..., 0:t]
  for k in range(1, q):
    out = jnp.maximum(out, block_max[..., k:k + t])
  if r:
    out = jnp.maximum(out, blocks[..., q:q + t, :r].max(axis=-1))
  return out


# --------------------------------------------------------------------------------------------
# Vocal tract length perturbation.


def vtlp_source_bins(alpha: jax.Array, num_bins: int) -> jax.Array:
  """Fractional input bin read by each output bin, for warp factors alpha.

  Args:
    alpha: [B] warp factors (> 0; 1 is the identity).
    num_bins: K = n_fft // 2 + 1 linear-frequency bins, bin K - 1 at Nyquist.

  Returns:
    float32 [B, K] source positions in [0, K - 1], increasing in k.
  """
  alpha = jnp.asarray(alpha, jnp.float32)[:, None]                          # [B, 1]
  top = float(num_bins - 1)
  k = jnp.arange(num_bins, dtype=jnp.float32)[None, :]                      # [1, K]
  bound = 0.875 * top * jnp.minimum(alpha, 1.0)
  low = k / alpha
  # Straight line from (bound, bound / alpha) to (top, top).
  high = bound / alpha + (k - bound) * (top - bound / alpha) / (top - bound)
  return jnp.clip(jnp.where(k <= bound, low, high), 0.0, top)


def vtlp_warp(power: jax.Array, alpha: jax.Array) -> jax.Array:
  """Warps [B, T, K] linear-frequency power spectra by per-utterance factors alpha [B].

  Output bin k is the linear interpolation of the input at `vtlp_source_bins(alpha, K)[k]`.
  """
  k = power.shape[-1]
  src = vtlp_source_bins(alpha, k)                                           # [B, K]
  lo = jnp.floor(src)
  frac = (src - lo)[:, None, :]
  lo = lo.astype(jnp.int32)
  hi = jnp.minimum(lo + 1, k - 1)
  take = lambda idx: jnp.take_along_axis(power, jnp.broadcast_to(idx[:, None, :], power.shape),
                                         axis=-1)
  return take(lo) * (1.0 - frac) + take(hi) * frac


# --------------------------------------------------------------------------------------------
# Log-mel.


def _power_spectrum(frames: jax.Array, config: LogMelConfig) -> jax.Array:
  """[..., T, n_fft] frames (zero beyond the window) -> float32 [..., T, n_fft // 2 + 1].

  Pre-emphasis (if on), periodic Hann window zero-padded to n_fft, |rfft|^2.
  """
  c = config.preemphasis
  if c:
    # Kaldi-style, inside the frame: y[0] = x[0] - c x[0], y[n] = x[n] - c x[n - 1]. Values
    # past the window (y[W] = -c x[W - 1]) are zeroed by the window below.
    prev = jnp.concatenate([frames[..., :1], frames[..., :-1]], axis=-1)
    frames = frames - c * prev
  window = np.zeros(config.n_fft, np.float32)
  window[:config.window_length] = _cached_window(config.window_length)
  spec = jnp.fft.rfft(frames * jnp.asarray(window), axis=-1)
  return jnp.square(spec.real) + jnp.square(spec.imag)


def log_mel(
    waveform: jax.Array,
    paddings: jax.Array,
    config: LogMelConfig = DEFAULT_CONFIG,
    rng: Optional[jax.Array] = None,
    warp: Optional[jax.Array] = None,
) -> tuple[jax.Array, jax.Array]:
  """Log-mel features of a padded batch of waveforms.

  Args:
    waveform: [B, S] samples in [-1, 1] (cast to float32).
    paddings: [B, S], 1.0 marks padded samples.
    config: front-end settings (static under jit).
    rng: PRNG key for dither; required only if config.dither > 0.
    warp: optional [B] VTLP factors (see `vtlp_warp`); None leaves the spectrum as it is.

  Returns:
    features: float32 [B, T, num_mels], log(max(mel power, log_floor)); 0 at padded frames.
    frame_paddings: [B, T] (dtype of `paddings`), 1.0 where any sample of the frame is padding.
    T = 1 + (S - window) // hop, or 0 if S < window.
  """
  if waveform.ndim != 2 or paddings.shape != waveform.shape:
    raise ValueError(
        f"waveform and paddings must both be [B, S], got {waveform.shape} and {paddings.shape}")
  x = jnp.asarray(waveform, jnp.float32)
  if config.dither > 0.0:
    if rng is None:
      raise ValueError(f"config.dither={config.dither} needs an rng")
    x = x + config.dither * jax.random.normal(rng, x.shape, jnp.float32)
  fpad = frame_paddings(paddings, config)
  frames = frame_signal(x, config.window_length, config.hop_length, config.n_fft)  # [B, T, N]
  power = _power_spectrum(frames, config)  # [B, T, K]
  if warp is not None:
    power = vtlp_warp(power, warp)
  mel = jnp.matmul(power, jnp.asarray(config.filterbank()),
                   precision=jax.lax.Precision.HIGHEST)  # [B, T, M]
  feats = jnp.log(jnp.maximum(mel, config.log_floor))
  feats = jnp.where(fpad[..., None] > 0, 0.0, feats)
  return feats, fpad


# --------------------------------------------------------------------------------------------
# Normalization.


def feature_moments(features: jax.Array,
                    frame_paddings: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Sums over valid frames, to accumulate global statistics over many batches.

  Args:
    features: [B, T, D].
    frame_paddings: [B, T], 1.0 marks padding.

  Returns:
    (count [], sum [D], sum of squares [D]) in float32 (float64 if x64 is enabled); add these
    over batches and pass the totals to `stats_from_moments`.
  """
  x = jnp.asarray(features, jnp.float32)
  valid = (frame_paddings <= 0).astype(x.dtype)[..., None]
  return valid.sum(), (x * valid).sum(axis=(0, 1)), (jnp.square(x) * valid).sum(axis=(0, 1))


def stats_from_moments(count: Any, total: Any, total_sq: Any) -> tuple[np.ndarray, np.ndarray]:
  """(mean [D], std [D]) in float32 from accumulated `feature_moments` (computed in float64)."""
  count = float(np.asarray(count))
  if count <= 0:
    raise ValueError("no valid frames to compute feature statistics from")
  mean = np.asarray(total, np.float64) / count
  var = np.maximum(np.asarray(total_sq, np.float64) / count - mean ** 2, 0.0)
  return mean.astype(np.float32), np.sqrt(var).astype(np.float32)


def normalize_features(
    features: jax.Array,
    frame_paddings: jax.Array,
    mode: Literal["utterance", "global"] = "utterance",
    stats: Optional[tuple[Any, Any]] = None,
    eps: float = 1e-5,
) -> jax.Array:
  """Mean/variance normalization that ignores padded frames.

  Args:
    features: [B, T, D].
    frame_paddings: [B, T], 1.0 marks padding.
    mode: "utterance": mean and variance of each utterance's valid frames, per channel;
      "global": the given `stats`.
    stats: for mode "global", (mean [D], std [D]).
    eps: added to the variance: y = (x - mean) / sqrt(var + eps) (var = std^2 in global mode).

  Returns:
    float32 [B, T, D]; padded frames are 0. An utterance with no valid frame gives all zeros
    (no NaN).
  """
  x = jnp.asarray(features, jnp.float32)
  valid = (frame_paddings <= 0).astype(jnp.float32)[..., None]  # [B, T, 1]
  if mode == "utterance":
    if stats is not None:
      raise ValueError("stats are only used with mode='global'")
    count = jnp.maximum(valid.sum(axis=1, keepdims=True), 1.0)  # [B, 1, 1]
    mean = (x * valid).sum(axis=1, keepdims=True) / count
    var = (jnp.square(x - mean) * valid).sum(axis=1, keepdims=True) / count
  elif mode == "global":
    if stats is None:
      raise ValueError("mode='global' needs stats=(mean [D], std [D])")
    mean, std = (jnp.asarray(s, jnp.float32) for s in stats)
    if mean.shape != x.shape[-1:] or std.shape != x.shape[-1:]:
      raise ValueError(
          f"global stats must be [{x.shape[-1]}], got mean {mean.shape} and std {std.shape}")
    var = jnp.square(std)
  else:
    raise ValueError(f"mode must be 'utterance' or 'global', got {mode!r}")
  return (x - mean) * jax.lax.rsqrt(var + eps) * valid


# --------------------------------------------------------------------------------------------
# SpecAugment.


def _band_masks(u_width: jax.Array, u_start: jax.Array, size: int, max_width: jax.Array,
                limit: jax.Array, active: Optional[jax.Array] = None) -> jax.Array:
  """Union of bands per row over an axis of length `size`, from uniform draws.

  Args:
    u_width, u_start: [B, N] uniform [0, 1) draws for N bands.
    size: length of the masked axis.
    max_width: [B] or scalar; band widths are U{0..max_width}.
    limit: [B] or scalar; starts are U{0..limit - width}, so bands lie in [0, limit).
    active: optional bool [B, N]; inactive bands are dropped.

  Returns:
    bool [B, size].
  """
  max_width = jnp.broadcast_to(jnp.asarray(max_width, jnp.float32), u_width.shape[:1])[:, None]
  limit = jnp.broadcast_to(jnp.asarray(limit, jnp.float32), u_width.shape[:1])[:, None]
  # The minimums guard against float32 rounding u * (n + 1) up to n + 1 when u is near 1.
  width = jnp.minimum(jnp.floor(u_width * (max_width + 1.0)), jnp.minimum(max_width, limit))
  start = jnp.minimum(jnp.floor(u_start * (limit - width + 1.0)), limit - width)
  iota = jnp.arange(size, dtype=jnp.float32)
  inside = (iota >= start[..., None]) & (iota < (start + width)[..., None])  # [B, N, size]
  if active is not None:
    inside = inside & active[..., None]
  return inside.any(axis=1)


def spec_augment(
    features: jax.Array,
    frame_paddings: jax.Array,
    rng: jax.Array,
    num_freq_masks: int = 2,
    freq_mask_width: int = 27,
    num_time_masks: int = 10,
    time_mask_max_ratio: float = 0.05,
    time_mask_max_width: Optional[int] = None,
    time_masks_per_frame: float = 0.0,
    mask_value: float = 0.0,
) -> jax.Array:
  """SpecAugment with adaptive time masks (Park et al. 2019/2020; Lingvo, ESPnet).

  Per utterance b with L_b valid frames (sum of 1 - frame_paddings; valid frames are assumed to
  come first, as in a right-padded batch):

  - `num_freq_masks` frequency masks, each of width U{0..freq_mask_width} channels at a start
    U{0..D - width};
  - time masks of width U{0..W_b} frames, W_b = floor(time_mask_max_ratio * L_b), capped by
    `time_mask_max_width` if given, at a start U{0..L_b - width}: every time mask lies inside
    the valid frames;
  - number of time masks: `num_time_masks`, or, if `time_masks_per_frame` > 0,
    min(num_time_masks, floor(time_masks_per_frame * L_b)) (adaptive multiplicity).

  Masked entries are set to `mask_value` (0, the mean of normalized features). Padded frames
  are returned unchanged. The mask sizes are static (pass them with `static_argnames` or
  `functools.partial` under jit).

  Args:
    features: [B, T, D].
    frame_paddings: [B, T], 1.0 marks padding.
    rng: PRNG key (the `specaug` stream); the same key gives the same masks.
    num_freq_masks: frequency masks per utterance.
    freq_mask_width: maximum frequency-mask width F (channels).
    num_time_masks: (maximum) number of time masks per utterance.
    time_mask_max_ratio: maximum time-mask width as a fraction of the valid length.
    time_mask_max_width: optional absolute cap on the time-mask width (frames).
    time_masks_per_frame: if > 0, adaptive number of time masks per valid frame.
    mask_value: value written into masked entries.

  Returns:
    [B, T, D], same dtype as `features`.
  """
  b, t, d = features.shape
  valid = frame_paddings <= 0  # [B, T]
  length = valid.sum(axis=-1).astype(jnp.float32)  # [B]
  nf = num_freq_masks if freq_mask_width > 0 else 0
  nt = num_time_masks if time_mask_max_ratio > 0 else 0
  if nf + nt == 0:
    return features
  mask = jnp.zeros((b, t, d), bool)
  # One draw for every width and start keeps the jitted program (threefry) small.
  u = jax.random.uniform(rng, (b, 2, nf + nt), jnp.float32)
  if nf:
    fmask = _band_masks(u[:, 0, :nf], u[:, 1, :nf], d, float(freq_mask_width), float(d))
    mask = mask | fmask[:, None, :]  # [B, 1, D]
  if nt:
    max_width = jnp.floor(time_mask_max_ratio * length)
    if time_mask_max_width is not None:
      max_width = jnp.minimum(max_width, float(time_mask_max_width))
    active = None
    if time_masks_per_frame > 0:
      count = jnp.minimum(jnp.floor(time_masks_per_frame * length), float(nt))
      active = jnp.arange(nt, dtype=jnp.float32)[None, :] < count[:, None]
    tmask = _band_masks(u[:, 0, nf:], u[:, 1, nf:], t, max_width, length, active)
    mask = mask | tmask[:, :, None]  # [B, T, 1]
  mask = mask & valid[..., None]
  return jnp.where(mask, jnp.asarray(mask_value, features.dtype), features)
