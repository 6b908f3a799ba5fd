"""Where the student's training step spends its time on this machine, with the alternatives
measured in the same run (so every figure has its reference beside it):

  python -m benchmarks.bench_step --config=configs/demo_student.py
  python -m benchmarks.bench_step --config=configs/demo_teacher.py --components=false \
      --reference=configs/demo_student.py

Prints a table: front end, encoder forward/gradient with unrolled layers vs `nn.scan`, the
depthwise convolution as shifted sums vs a grouped `nn.Conv`, the subsampling as patch
matmuls vs `lax` Conv2D (student encoders only; `--components=false` skips them), and the full
jitted train step per bucket of `config.data.dev` in audio seconds per second. With
`--reference`, the same train-step table for a second config (e.g. the default student beside
the wav2vec2 demo teacher) and the ratio of their total throughputs.
"""

import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from distill_jax.audio import features as feats_lib
from distill_jax.models import build, layers
from distill_jax.train import splits, state as state_lib
from benchmarks import common as bcommon
from launch import common

_CONFIG = common.define_config_flag()
_BATCH = flags.DEFINE_integer("batch", 20, "Batch size of the component benchmarks.")
_SECONDS = flags.DEFINE_float("seconds", 8.0, "Utterance length of the component benchmarks.")
_RUNS = flags.DEFINE_integer("runs", 3, "Timed runs per figure (median).")
_COMPONENTS = flags.DEFINE_bool("components", True, "Benchmark the student's components too.")
_REFERENCE = config_flags.DEFINE_config_file(
    "reference", None, "A second config whose train step is measured in the same run.")
_BUCKETS = flags.DEFINE_list("buckets", None, "Bucket indices to time (default: all non-empty).")


def _time(fn, *args) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(_RUNS.value):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return 1000 * float(np.median(times))


def _grad_ms(module, *inputs) -> tuple[float, float]:
  params = module.init(jax.random.key(0), *inputs)
  out = lambda p: jax.tree_util.tree_reduce(
      lambda a, x: a + jnp.sum(x), module.apply(p, *inputs), 0.0)
  return _time(jax.jit(out), params), _time(jax.jit(jax.grad(out)), params)


class _GroupedConv(nn.Module):
  kernel: int

  @nn.compact
  def __call__(self, x):
    return nn.Conv(x.shape[-1], (self.kernel,), feature_group_count=x.shape[-1])(x)


class _LaxSubsampling(nn.Module):
  channels: int

  @nn.compact
  def __call__(self, x):
    h = x[..., None]
    for _ in range(2):
      h = nn.relu(nn.Conv(self.channels, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))(h))
    return h


class _PatchSubsampling(nn.Module):
  channels: int

  @nn.compact
  def __call__(self, x):
    h = x[..., None]
    for _ in range(2):
      h = nn.relu(nn.Dense(self.channels)(layers.conv2d_patches(h)))
    return h


def main(argv):
  del argv
  common.enable_compilation_cache()
  config = _CONFIG.value
  if _COMPONENTS.value:
    _components(config)
  total = _train_step_table(config)
  if _REFERENCE.value is not None:
    ref = _train_step_table(_REFERENCE.value)
    print(f"\n{config.get('name', 'config')}: {total:.1f} padded audio s/s over the buckets; "
          f"{_REFERENCE.value.get('name', 'reference')}: {ref:.1f}; ratio {total / ref:.3f}")


def _components(config) -> None:
  enc_cfg = config.model[config.model.encoder]
  b, t = _BATCH.value, int(_SECONDS.value * 100)
  rng = np.random.default_rng(0)
  rows = []
  wav = jnp.asarray(rng.normal(size=(b, int(_SECONDS.value * 16000))) * 0.1, jnp.float32)
  front = jax.jit(lambda w: feats_lib.normalize_features(*feats_lib.log_mel(w, 0 * w)))
  rows.append(("log-mel + CMVN forward", _time(front, wav), None))

  feats = jnp.asarray(rng.normal(size=(b, t, 80)), jnp.float32)
  pads = jnp.zeros((b, t))
  for scan in (False, True):
    cfg = config.model.copy_and_resolve_references()
    if "scan_layers" in cfg[cfg.encoder]:
      cfg[cfg.encoder].scan_layers = scan
    enc = build.build_encoder(cfg)
    fwd, grad = _grad_ms(_EncoderOutputs(enc), feats, pads)
    rows.append((f"encoder ({'nn.scan' if scan else 'unrolled'}) forward / gradient", fwd, grad))

  d, k = enc_cfg.get("model_dim", 144), enc_cfg.get("conv_kernel", 15)
  x = jnp.asarray(rng.normal(size=(b, t // 4, d)), jnp.float32)
  rows.append(("depthwise conv: shifted sums fwd / grad", *_grad_ms(layers.DepthwiseConv1D(k), x)))
  rows.append(("depthwise conv: grouped nn.Conv fwd / grad", *_grad_ms(_GroupedConv(k), x)))
  ch = enc_cfg.get("subsampling_channels", 32)
  rows.append(("subsampling: patch matmuls fwd / grad", *_grad_ms(_PatchSubsampling(ch), feats)))
  rows.append(("subsampling: lax Conv2D fwd / grad", *_grad_ms(_LaxSubsampling(ch), feats)))

  print(f"\ncomponents (B={b}, {_SECONDS.value:.0f} s utterances, {jax.device_count()} device(s)):")
  print(f"{'what':<48} {'fwd ms':>9} {'grad ms':>9}")
  for name, f, g in rows:
    print(f"{name:<48} {f:>9.1f} {'' if g is None else f'{g:>9.1f}'}")


def _train_step_table(config) -> float:
  """Times the jitted train step on a full batch of each bucket of config.data.dev; returns
  the padded audio seconds per second over all timed batches."""
  tok = splits.load_tokenizer(config)
  model = build.build_student(config.model, tok.vocab_size)
  ds, _ = splits.load_split(config, config.data.dev, "dev", tok, progress=False)
  par, state, params = bcommon.train_step(config, model, ds)
  step = par.step
  print(f"\n{config.get('name', '')} train step ({state_lib.count_params(params):,} params, "
        f"batch_seconds={config.data.batch_seconds}, {jax.device_count()} device(s)):")
  print(f"{'batch x samples':<18} {'compile s':>9} {'step ms':>9} {'padded audio s/s':>17} "
        f"{'audio s/s':>10}")
  audio, seconds = 0.0, 0.0
  chosen = None if not _BUCKETS.value else {int(b) for b in _BUCKETS.value}
  for k_, members in enumerate(ds.bucket_members):
    if not members or (chosen is not None and k_ not in chosen):
      continue
    host_batch = ds.assemble(k_, members[:ds.buckets.batch_size(k_)])
    batch = par.put_batch(host_batch)
    t0 = time.perf_counter()
    state, m = step(state, batch)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(_RUNS.value):
      t0 = time.perf_counter()
      state, m = step(state, batch)
      jax.block_until_ready(m)
      times.append(time.perf_counter() - t0)
    ms = 1000 * float(np.median(times))
    shape = host_batch["waveform"].shape
    padded = shape[0] * shape[1] / 16000
    real = float(np.sum(1.0 - host_batch["wave_paddings"])) / 16000
    audio, seconds = audio + padded, seconds + ms / 1000
    print(f"{shape[0]:>4} x {shape[1]:<11} {compile_s:>9.1f} {ms:>9.0f} "
          f"{padded / (ms / 1000):>17.1f} {real / (ms / 1000):>10.1f}")
  return audio / max(seconds, 1e-9)


class _EncoderOutputs(nn.Module):
  encoder: nn.Module

  def __call__(self, feats, pads):
    return self.encoder(feats, pads, train=False)["hidden_states"]


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
