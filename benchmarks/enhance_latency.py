r"""Measured latency of the streaming denoiser (impulse response through `step`), next to the
framing formula, plus parameters, MAC/s and the real-time factor of `step` on this machine.

  python -m benchmarks.enhance_latency                      # default config, random weights
  python -m benchmarks.enhance_latency --workdir=runs/enh_gan  # a trained run (latest step)

How latency is measured. An impulse at input sample t0 (in a low white-noise floor, so the mask
is not zero) is fed one hop at a time through `model.step`; the same input without the impulse
gives the reference. The difference is the streamed response h. A real-time device plays the
block returned by call b during the next block, so stream index p reaches the ear R samples after
it is produced; the end-to-end delay of the impulse's response peak is
argmax|h| - t0 + R samples. The framing alone (mask = 1) gives exactly 2R; the model can only add
to it what its mask's phase does (0 for a zero-phase mask). 'onset' is the first stream sample
with |h| above 1% of the peak: a negative onset would mean output before input (impossible for a
causal system; the check below fails loudly).
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from configs import enhance as enhance_config
from distill_jax.enhance import model as model_lib
from distill_jax.enhance import stft
from distill_jax.enhance import train as train_lib
from distill_jax.train import checkpoint as ckpt_lib

_WORKDIR = flags.DEFINE_string("workdir", "", "A run of launch/train_enhance.py (else the "
                               "default config with random weights).")
_SECONDS = flags.DEFINE_float("seconds", 2.0, "Audio streamed for the real-time factor.")


def _load(workdir: str):
  if not workdir:
    config = enhance_config.get_config("recon")
    models = train_lib.build_models(config)
    params = model_lib.init_params(models.generator, 0)
    return config, models.generator, params, "random init"
  with open(os.path.join(workdir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  models = train_lib.build_models(config)
  seg = int(config.data.segment_seconds * config.model.sample_rate) // config.model.hop
  state = train_lib.init_state(config, models, config.seed, seg * config.model.hop)
  state, _, step = ckpt_lib.Checkpointer(workdir, read_only=True).restore("latest", state)
  return config, models.generator, state.g_params, f"{workdir} step {step}"


def impulse_response(step_fn, state, hop: int, t0: int, length: int, floor: float = 1e-3):
  """(h [length], onset, peak) in stream samples, relative to t0."""
  rng = np.random.default_rng(0)
  bg = (floor * rng.standard_normal(length)).astype(np.float32)
  x = bg.copy()
  x[t0] += 1.0

  def run(sig):
    st, outs = state, []
    for b in sig.reshape(-1, hop):
      st, o = step_fn(st, jnp.asarray(b[None]))
      outs.append(np.asarray(o[0]))
    return np.concatenate(outs)

  h = run(x) - run(bg)
  peak = int(np.argmax(np.abs(h)))
  onset = int(np.argmax(np.abs(h) > 0.01 * np.abs(h[peak])))
  return h, onset - t0, peak - t0


def main(argv):
  del argv
  config, model, params, what = _load(_WORKDIR.value)
  spec = model.frame
  r, sr = spec.hop, spec.sample_rate
  t0, length = 40 * r + r // 2, 80 * r
  identity = lambda st, b: (lambda s1, f: stft.synthesis_step(s1, f, spec))(
      *stft.analysis_step(st, b, spec))
  _, on_i, pk_i = impulse_response(jax.jit(identity), stft.init_stream(1, spec), r, t0, length)
  step = jax.jit(lambda st, b: model_lib.step(model, params, st, b))
  _, on_m, pk_m = impulse_response(step, model_lib.initial_stream_state(model, 1), r, t0, length)
  for name, onset in (("framing", on_i), ("model", on_m)):
    if onset + r < 0:
      raise AssertionError(f"{name}: output {-(onset + r)} samples before its input: not causal")

  n_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
  macs = model_lib.count_macs_per_frame(model)
  st = model_lib.initial_stream_state(model, 1)
  blocks = np.random.default_rng(1).standard_normal((int(_SECONDS.value * sr) // r, 1, r))
  blocks = jnp.asarray(blocks * 0.05, jnp.float32)
  st, o = step(st, blocks[0])
  o.block_until_ready()
  t = time.perf_counter()
  for b in blocks:
    st, o = step(st, b)
  o.block_until_ready()
  rtf = (time.perf_counter() - t) / _SECONDS.value
  ms = lambda s: 1000.0 * s / sr
  print(f"enhance latency benchmark ({what}); {jax.devices()[0].platform}, "
        f"XLA threads as configured")
  print(f"framing: window {spec.window} ({ms(spec.window):.1f} ms), hop {r} ({ms(r):.1f} ms), "
        f"synthesis window {2 * r} ({ms(2 * r):.1f} ms); formula 2R - 1 = "
        f"{spec.latency_samples} samples = {spec.latency_ms:.2f} ms, lookahead 0")
  print(f"{'path':10} {'onset':>8} {'peak':>8} {'peak + R (ear)':>16}")
  for name, on, pk in (("framing", on_i, pk_i), ("model", on_m, pk_m)):
    print(f"{name:10} {on:8d} {pk:8d} {pk + r:9d} = {ms(pk + r):5.2f} ms")
  print(f"params {n_params:,}; MACs/frame {macs['total']:,} = {macs['total'] * sr / r / 1e6:.1f} "
        f"MMAC/s ({', '.join(f'{k} {v:,}' for k, v in macs.items() if k != 'total')})")
  print(f"step RTF {rtf:.3f} ({1000 * rtf * r / sr:.3f} ms per {ms(r):.0f} ms hop, "
        "one call per hop, dispatch included)")


if __name__ == "__main__":
  app.run(main)
