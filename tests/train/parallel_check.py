"""Runs the CTC and distillation train steps under each data-parallel mode; prints the results
as one JSON line.

Run by tests/train/test_parallel.py in a subprocess started with
XLA_FLAGS=--xla_force_host_platform_device_count=2 (the device count is fixed when JAX starts).
1-device references use a mesh of the first device only, so one process computes everything.
"""

import json
import sys

import jax
import numpy as np

from configs import base
from distill_jax import text as text_lib
from distill_jax.models import build
from distill_jax.models import wav2vec2 as w2v
from distill_jax.models.wav2vec2_teacher import Wav2Vec2Teacher
from distill_jax.train import parallel, state as state_lib, steps

NUM_STEPS = 3
BATCH = 4
SAMPLES = 8000  # 0.5 s: 12 encoder frames


def tiny_config():
  """tests/train/tiny_config.py's model, deterministic (no dropout or SpecAugment)."""
  c = base.get_config()
  c.model.specaug_enabled = False
  c.model.conformer.update(dict(model_dim=16, num_layers=1, num_heads=2, conv_kernel=3,
                                subsampling_channels=4, dropout_rate=0.0))
  c.train.update(dict(lr=1e-3, warmup_steps=0, num_steps=NUM_STEPS))
  return c


def synthetic_batch(vocab_size: int, seed: int = 0) -> dict[str, np.ndarray]:
  """Random waveforms and labels of different lengths; the last row is a weight-0 filler.

  Returns waveform [4, 8000], wave_paddings [4, 8000], labels [4, 8], label_paddings [4, 8],
  weights [4], ids [4].
  """
  rng = np.random.default_rng(seed)
  wave_len = np.array([8000, 6000, 7000, 4000])
  label_len = np.array([6, 2, 4, 3])
  pos = np.arange(SAMPLES)[None]
  wave_pad = (pos >= wave_len[:, None]).astype(np.float32)
  wave = (0.1 * rng.standard_normal((BATCH, SAMPLES)) * (1 - wave_pad)).astype(np.float32)
  label_pad = (np.arange(8)[None] >= label_len[:, None]).astype(np.float32)
  labels = (rng.integers(1, vocab_size, (BATCH, 8)) * (1 - label_pad)).astype(np.int32)
  return dict(waveform=wave, wave_paddings=wave_pad, labels=labels, label_paddings=label_pad,
              weights=np.array([1, 1, 1, 0], np.float32), ids=np.array(["a", "b", "c", ""]))


def train(mode: str, num_devices: int, grad_accum_steps: int = 1) -> dict:
  """NUM_STEPS steps on the synthetic batch: per-step losses and the final parameters."""
  config = tiny_config()
  tok = text_lib.CharTokenizer()
  model = build.build_student(config.model, tok.vocab_size)
  batch = synthetic_batch(tok.vocab_size)
  params = model.init({"params": jax.random.key(0)}, batch["waveform"][:1],
                      batch["wave_paddings"][:1], train=False)["params"]
  tx = state_lib.make_optimizer(config.train)
  step = steps.make_train_step(model, tx, state_lib.learning_rate_schedule(config.train),
                                   tok.blank_id, grad_accum_steps=grad_accum_steps)
  par = parallel.parallelize(step, parallel.make_mesh(jax.devices()[:num_devices]), mode=mode)
  init = jax.tree_util.tree_leaves(jax.device_get(params))  # the step donates the state
  state = par.put_state(state_lib.create_state(params, tx, 0))
  losses = []
  for _ in range(NUM_STEPS):
    state, metrics = par.step(state, par.put_batch(batch))
    losses.append(float(par.get_metrics(metrics)["loss"]))
  final = jax.device_get(par.get_state(state))
  assert int(final.step) == NUM_STEPS
  return dict(losses=losses, params=jax.tree_util.tree_leaves(final.params), init=init)


def train_kd(mode: str, num_devices: int) -> dict:
  """NUM_STEPS distillation steps (online tiny random teacher, KL + CTC + hidden terms)."""
  config = tiny_config()
  tok = text_lib.CharTokenizer()
  model = build.build_student(config.model, tok.vocab_size)
  batch = synthetic_batch(tok.vocab_size)
  t_cfg = w2v.Wav2Vec2Config(vocab_size=tok.vocab_size, hidden_size=24, num_hidden_layers=2,
                             num_attention_heads=2, intermediate_size=32, conv_dim=(8,) * 7,
                             num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                             feat_extract_norm="layer", do_stable_layer_norm=True,
                             conv_bias=True)
  spec = steps.KdSpec(alpha=0.5, beta=1.0, gamma=0.5, temperature=2.0, frame_ratio=2,
                      layer_pairs=((1, 2),), teacher_dim=24)
  student = model.init({"params": jax.random.key(0)}, batch["waveform"][:1],
                       batch["wave_paddings"][:1], train=False)["params"]
  params = steps.init_distill_params(model, spec, student, 1, jax.random.key(1))
  tx = state_lib.make_optimizer(config.train)
  step = steps.make_distill_train_step(
      model, tx, state_lib.learning_rate_schedule(config.train), spec,
      teacher_fn=lambda p, w, m: Wav2Vec2Teacher(t_cfg, None, {}).forward(p, w, m, (2,)),
      blank_id=tok.blank_id)
  par = parallel.parallelize(step, parallel.make_mesh(jax.devices()[:num_devices]), mode=mode,
                             num_frozen=1)
  init = jax.tree_util.tree_leaves(jax.device_get(params))
  state = par.put_state(state_lib.create_state(params, tx, 0))
  teacher = par.put_frozen(w2v.init_params(t_cfg, seed=2))
  losses = []
  for _ in range(NUM_STEPS):
    state, metrics = par.step(state, par.put_batch(batch), teacher)
    losses.append(float(par.get_metrics(metrics)["loss"]))
  final = jax.device_get(par.get_state(state))
  return dict(losses=losses, params=jax.tree_util.tree_leaves(final.params), init=init)


def max_param_diff(a: dict, b: dict) -> float:
  return max(float(np.max(np.abs(x - y))) for x, y in zip(a["params"], b["params"]))


def batch_error(mode: str) -> str:
  """The message of putting a 3-row batch on 2 devices."""
  par = parallel.parallelize(lambda s, b: (s, {}), parallel.make_mesh(), mode=mode)
  batch = {k: v[:3] for k, v in synthetic_batch(8).items()}
  try:
    par.put_batch(batch)
  except ValueError as e:
    return str(e)
  return ""


def accum_error() -> str:
  """The message of 3 micro-batches of a 4-row batch (raised when the step is traced)."""
  try:
    train("shard_map", 1, grad_accum_steps=3)
  except ValueError as e:
    return str(e)
  return ""


def main():
  assert jax.device_count() == 2, jax.devices()
  ref = train("shard_map", 1)
  runs = {"shard_map": train("shard_map", 2), "pmap": train("pmap", 2),
          "shard_map_accum2": train("shard_map", 2, grad_accum_steps=2)}
  out = dict(ref_losses=ref["losses"],
             losses={k: r["losses"] for k, r in runs.items()},
             param_diff={k: max_param_diff(ref, r) for k, r in runs.items()},
             param_change=max_param_diff(ref, dict(params=ref["init"])),
             errors={m: batch_error(m) for m in parallel.MODES},
             accum_error=accum_error())
  kd_ref = train_kd("shard_map", 1)
  kd_runs = {"shard_map": train_kd("shard_map", 2), "pmap": train_kd("pmap", 2)}
  out.update(kd_ref_losses=kd_ref["losses"],
             kd_losses={k: r["losses"] for k, r in kd_runs.items()},
             kd_param_diff={k: max_param_diff(kd_ref, r) for k, r in kd_runs.items()},
             kd_param_change=max_param_diff(kd_ref, dict(params=kd_ref["init"])))
  print(json.dumps(out))


if __name__ == "__main__":
  sys.exit(main())
