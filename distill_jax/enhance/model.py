"""A causal time-frequency denoiser (GTCRN / DCCRN family, sized for a hearing aid).

Per frame of the causal STFT (`enhance.stft`, default 24 ms analysis / 4 ms hop / 8 ms
synthesis window at 16 kHz):

  X [B, T, F] complex
   -> features [B, T, Fb, 3]: power-law compressed magnitude |X|^c and the compressed complex
      value (|X|^c e^{i angle X}), pooled into Fb bands (`enhance.bands`: low bins kept, the
      rest on an ERB grid)
   -> encoder: causal 2-D convs over (time, band), kernel (kt, 3), band stride 2, PReLU;
      each keeps its last kt - 1 input frames as streaming state
   -> bottleneck: dense -> GRU stack over time (carried state) -> dense
   -> decoder: band-upsampling transposed convs (kernel 1 in time: no state), skip additions
   -> complex mask per band -> bins (interpolating synthesis matrix), magnitude bounded by
      `mask_bound * tanh(|m|)`
   -> Y = M X [B, T, F]

Nothing looks ahead: frame t of Y depends on frames <= t, so the model's lookahead is 0 frames
and the algorithmic latency is the framing's, 2R - 1 samples (7.94 ms at R = 64; see
`enhance.stft`).

Two entry points, equal to float32 rounding (tested to 1e-5):
  `enhance(model, params, wave [B, S]) -> [B, S]`, the whole utterance at once;
  `step(model, params, state, block [B, R]) -> (state, out [B, R])`, one hop at a time, whose
  concatenated output is `enhance`'s delayed by R samples.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from distill_jax.enhance import bands as bands_lib
from distill_jax.enhance import stft as stft_lib

Array = jax.Array
State = dict[str, Any]


class CausalConv(nn.Module):
  """Conv over (time, band) that sees only past frames.

  x: [B, T, Fb, C], cache: [B, kt - 1, Fb, C] (the previous kt - 1 input frames)
  -> ([B, T, ceil(Fb / stride), features], new cache).
  """
  features: int
  kernel_time: int = 2
  stride: int = 2

  @nn.compact
  def __call__(self, x: Array, cache: Array) -> tuple[Array, Array]:
    full = jnp.concatenate([cache, x], axis=1)
    y = nn.Conv(self.features, (self.kernel_time, 3), strides=(1, self.stride),
                padding=((0, 0), (1, 1)))(full)
    new_cache = full[:, full.shape[1] - (self.kernel_time - 1):]
    return nn.PReLU(negative_slope_init=0.25)(y), new_cache


class UpConv(nn.Module):
  """Band upsampling by 2 (kernel 1 in time, so no state). [B, T, Fb, C] -> [B, T, 2 Fb, f]."""
  features: int
  activation: bool = True

  @nn.compact
  def __call__(self, x: Array) -> Array:
    y = nn.ConvTranspose(self.features, (1, 3), strides=(1, 2), padding="SAME")(x)
    return nn.PReLU(negative_slope_init=0.25)(y) if self.activation else y


class Denoiser(nn.Module):
  """The mask estimator: X [B, T, F] complex, state -> (Y [B, T, F] complex, state).

  `state` comes from `initial_state(batch)`; zeros are the state before the first frame.
  """
  frame: stft_lib.FrameSpec = stft_lib.FrameSpec()
  num_linear: int = 32  # low bins kept one per band
  num_erb: int = 32  # ERB bands for the rest; Fb = num_linear + num_erb must be divisible by
  # 2 ** len(channels)
  channels: Sequence[int] = (16, 32, 32)
  kernel_time: int = 2
  hidden: int = 128
  num_gru: int = 2
  compress: float = 0.3  # |X|^compress features
  mask_bound: float = 1.0

  @property
  def num_bands(self) -> int:
    return self.num_linear + self.num_erb

  def band_shapes(self) -> list[int]:
    """Bands at the input of each encoder conv, then at the bottleneck."""
    out = [self.num_bands]
    for _ in self.channels:
      out.append(-(-out[-1] // 2))
    return out

  def decoder_widths(self) -> tuple[int, ...]:
    """Output channels of the decoder's upsampling convs (the last one feeds the mask head)."""
    return tuple(reversed((8,) + tuple(self.channels[:-1])))

  def initial_state(self, batch: int) -> State:
    """Zeros: conv caches [B, kt - 1, Fb_i, C_i] and GRU carries [B, hidden]."""
    fb = self.band_shapes()
    ins = (3,) + tuple(self.channels[:-1])
    return dict(
        conv=[jnp.zeros((batch, self.kernel_time - 1, f, c), jnp.float32)
              for f, c in zip(fb, ins)],
        gru=[jnp.zeros((batch, self.hidden), jnp.float32) for _ in range(self.num_gru)])

  def _check(self):
    fb = self.num_bands
    if fb % (2 ** len(self.channels)):
      raise ValueError(f"enhance.model: num_linear + num_erb = {fb} bands must be divisible by "
                       f"2 ** len(channels) = {2 ** len(self.channels)}")

  @nn.compact
  def __call__(self, x: Array, state: State) -> tuple[Array, State]:
    self._check()
    ana, syn = bands_lib.band_matrices(self.frame.num_bins, self.num_linear, self.num_erb,
                                       self.frame.sample_rate)
    mag = jnp.abs(x)
    cmag = (mag + 1e-12) ** self.compress
    unit = x / jnp.maximum(mag, 1e-12)
    feats = jnp.stack([cmag, cmag * unit.real, cmag * unit.imag], axis=-1)  # [B, T, F, 3]
    h = jnp.einsum("btfc,fk->btkc", feats, jnp.asarray(ana))  # [B, T, Fb, 3]

    skips, caches = [], []
    for i, ch in enumerate(self.channels):
      skips.append(h)
      h, c = CausalConv(ch, self.kernel_time, name=f"enc_{i}")(h, state["conv"][i])
      caches.append(c)
    b, t, fb, ch = h.shape
    z = nn.Dense(self.hidden, name="bottleneck_in")(h.reshape(b, t, fb * ch))
    carries = []
    for i in range(self.num_gru):
      carry, out = nn.RNN(nn.GRUCell(self.hidden), return_carry=True, name=f"gru_{i}")(
          z, initial_carry=state["gru"][i])
      z = z + out if i else out  # residual between GRU layers
      carries.append(carry)
    h = h + nn.Dense(fb * ch, name="bottleneck_out")(z).reshape(b, t, fb, ch)

    for i, ch_out in enumerate(self.decoder_widths()):
      h = UpConv(ch_out, name=f"dec_{i}")(h)
      skip = skips[len(skips) - 1 - i]
      if i == len(self.channels) - 1:  # the input features: project them, then the mask head
        h = nn.Dense(2, name="mask")(h + nn.Dense(ch_out, name="skip_in")(skip))
      else:
        h = h + skip
    m = jnp.einsum("btkc,kf->btfc", h, jnp.asarray(syn))  # [B, T, F, 2]
    m = jax.lax.complex(m[..., 0], m[..., 1])
    am = jnp.sqrt(m.real ** 2 + m.imag ** 2 + 1e-12)  # no NaN gradient at m = 0
    m = m * (self.mask_bound * jnp.tanh(am) / am)
    return m * x, dict(conv=caches, gru=carries)


def build(cfg) -> Denoiser:
  """Denoiser from a config's `model` section (configs/enhance.py)."""
  frame = stft_lib.FrameSpec(window=cfg.window, hop=cfg.hop, sample_rate=cfg.sample_rate)
  return Denoiser(frame=frame, num_linear=cfg.num_linear, num_erb=cfg.num_erb,
                  channels=tuple(cfg.channels), kernel_time=cfg.kernel_time, hidden=cfg.hidden,
                  num_gru=cfg.num_gru, compress=cfg.compress, mask_bound=cfg.mask_bound)


def init_params(model: Denoiser, seed: int) -> Any:
  x = jnp.zeros((1, 2, model.frame.num_bins), jnp.complex64)
  return jax.jit(model.init)(jax.random.key(seed), x, model.initial_state(1))["params"]


def enhance(model: Denoiser, params: Any, wave: Array, gain: Array | None = None) -> Array:
  """Whole-utterance forward. wave: [B, S], S a multiple of the hop -> [B, S], aligned with
  the input (the framing's 2R - 1 samples of latency are not applied here; `step` has them).
  gain: optional real per-bin gains [F] on the enhanced spectrum (e.g. `nalr.bin_gains`)."""
  spec = model.frame
  xp = jnp.pad(wave.astype(jnp.float32), ((0, 0), (0, spec.hop)))  # completes the last block
  y, _ = model.apply({"params": params}, stft_lib.stft(xp, spec),
                     model.initial_state(wave.shape[0]))
  return stft_lib.istft(y if gain is None else y * gain, spec)


def initial_stream_state(model: Denoiser, batch: int) -> State:
  return dict(stft=stft_lib.init_stream(batch, model.frame), net=model.initial_state(batch))


def step(model: Denoiser, params: Any, state: State, block: Array,
         gain: Array | None = None) -> tuple[State, Array]:
  """Streaming: one hop of input [B, R] -> (state, one hop of output [B, R]).

  Output of call b is `enhance`'s output block b - 1 (samples [(b-1)R, bR)): feed one block of
  zeros after the last input block to flush it. gain: as in `enhance`.
  """
  st, x = stft_lib.analysis_step(state["stft"], block, model.frame)
  y, net = model.apply({"params": params}, x[:, None], state["net"])
  y = y if gain is None else y * gain
  st, out = stft_lib.synthesis_step(st, y[:, 0], model.frame)
  return dict(stft=st, net=net), out


def stream(model: Denoiser, params: Any, wave: Array, gain: Array | None = None) -> Array:
  """Runs `step` over a whole waveform [B, S] with `lax.scan` (R zeros appended to flush)
  -> [B, S + R]: the streamed output, `enhance`'s delayed by R samples."""
  spec = model.frame
  if wave.ndim != 2 or wave.shape[1] % spec.hop:
    raise ValueError(f"stream: waveform shape {wave.shape}: need [B, S] with S a multiple of "
                     f"the hop {spec.hop}")
  b = wave.shape[0]
  blocks = jnp.pad(wave, ((0, 0), (0, spec.hop))).reshape(b, -1, spec.hop).transpose(1, 0, 2)
  _, outs = jax.lax.scan(lambda s, blk: step(model, params, s, blk, gain),
                         initial_stream_state(model, b), blocks)
  return outs.transpose(1, 0, 2).reshape(b, -1)


def count_macs_per_frame(model: Denoiser) -> dict[str, int]:
  """Multiply-accumulates of one frame by part (dense, GRU, convs, band maps, FFTs ~ N log2 N
  complex butterflies counted as 2 N log2 N real MACs per transform)."""
  fb = model.band_shapes()
  f = model.frame.num_bins
  ins = (3,) + tuple(model.channels[:-1])
  enc = sum(fb[i + 1] * model.kernel_time * 3 * ins[i] * model.channels[i]
            for i in range(len(model.channels)))
  outs = model.decoder_widths()
  dec_in = (model.channels[-1],) + outs[:-1]
  nl = len(model.channels)
  dec = sum(fb[nl - i] * 3 * dec_in[i] * outs[i] for i in range(nl))
  dec += fb[0] * (3 * outs[-1] + outs[-1] * 2)
  bott = fb[-1] * model.channels[-1]
  dense = 2 * bott * model.hidden
  gru = model.num_gru * 3 * (2 * model.hidden * model.hidden)
  bands = f * fb[0] * 3 + fb[0] * f * 2
  n = model.frame.window
  ffts = 2 * int(2 * n * np.log2(n))
  return dict(encoder=enc, decoder=dec, dense=dense, gru=gru, bands=bands, fft=ffts,
              total=enc + dec + dense + gru + bands + ffts)
