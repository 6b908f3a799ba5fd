"""The denoiser's training loop: seeded mixtures -> generator (+ discriminator) steps ->
TensorBoard/JSONL metrics (train/metrics.py) -> dev evaluation per SNR -> Orbax checkpoints
(train/checkpoint.py), resumable.

`config.train.init_from = 'WORKDIR[@STEP]'` starts the generator from another run's checkpoint
(e.g. the GAN arm fine-tuning a reconstruction-only run); a resumed run ignores it.

Batch k holds mixtures k B .. k B + B - 1 of (config.seed, index) (data/mixing.py), so the data
position of a resumed run is its step. The clean speech and the noise are decoded once into
memory (16 kHz mono).
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from distill_jax.audio import io as audio_io
from distill_jax.data import manifest as manifest_lib
from distill_jax.data import mixing
from distill_jax.enhance import evaluate as evaluate_lib
from distill_jax.enhance import model as model_lib
from distill_jax.enhance import train as train_lib
from distill_jax.train import checkpoint as ckpt_lib
from distill_jax.train import metrics as metrics_lib

log = logging.getLogger(__name__)


def load_clean(path: str, sample_rate: int, max_items: int = 0) -> list[np.ndarray]:
  utts = manifest_lib.read_manifest(path)
  if max_items:
    utts = utts[:max_items]
  if not utts:
    raise ValueError(f"{path}: no utterances")
  return [audio_io.load_audio(u.path, sample_rate) for u in utts]


def load_noise(path: str, sample_rate: int) -> list[np.ndarray]:
  """The listed noise files, each without its leading and trailing digital silence (ESC-50
  pads short clips with exact zeros to 5 s; a crop of the padding has no SNR)."""
  if not path:
    raise ValueError("config.data.noise_train / noise_dev: empty; give a folder or a list file")
  out, trimmed = [], 0
  for f in mixing.read_noise_list(path):
    x = audio_io.load_audio(f, sample_rate)
    if not np.any(x):
      raise ValueError(f"{f}: the noise file is all zeros")
    y = np.trim_zeros(x)
    trimmed += x.shape[0] - y.shape[0]
    out.append(y)
  log.info("%s: %d noise files, %.1f s of leading/trailing digital silence trimmed", path,
           len(out), trimmed / sample_rate)
  return out


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  os.makedirs(workdir, exist_ok=True)
  dc, tc = config.data, config.train
  sr = config.model.sample_rate
  hop = config.model.hop
  seg = int(round(dc.segment_seconds * sr)) // hop * hop
  dev_len = int(round(dc.dev_seconds * sr)) // hop * hop
  cleans = load_clean(dc.clean_train, sr, dc.max_clean)
  dev_cleans = load_clean(dc.clean_dev, sr, dc.max_clean)
  noises, dev_noises = load_noise(dc.noise_train, sr), load_noise(dc.noise_dev, sr)
  log.info("clean: %d train / %d dev utterances; noise: %d train / %d dev files", len(cleans),
           len(dev_cleans), len(noises), len(dev_noises))
  per_snr = max(1, dc.dev_mixtures // len(dc.dev_snrs))
  dev = evaluate_lib.dev_set(dc.dev_seed, dev_cleans, dev_noises, dc.dev_snrs, per_snr, dev_len,
                             dc.speech_level)

  models = train_lib.build_models(config)
  state = train_lib.init_state(config, models, config.seed, seg)
  n_g = sum(x.size for x in jax.tree_util.tree_leaves(state.g_params))
  n_d = sum(x.size for x in jax.tree_util.tree_leaves(state.d_params))
  macs = model_lib.count_macs_per_frame(models.generator)["total"]
  log.info("generator %s params, %.1f MMAC/s, latency %.2f ms; discriminators %s params",
           f"{n_g:,}", macs * sr / hop / 1e6, models.generator.frame.latency_ms, f"{n_d:,}")
  ckpt = ckpt_lib.Checkpointer(workdir, keep_last=tc.keep_last, keep_best=1,
                               best_metric="dev_neg_sisdr")
  if ckpt.latest_step() is not None:
    state, extra, step = ckpt.restore("latest", state)
    log.info("resumed from step %d", step)
  elif tc.get("init_from", ""):
    state = state.replace(**train_lib.warm_start_generator(config, tc.init_from))
    log.info("generator initialized from %s; discriminators and optimizer states fresh",
             tc.init_from)
  trainer = train_lib.Trainer(config, models)
  enhance = jax.jit(lambda p, x: model_lib.enhance(models.generator, p, x))
  writer = metrics_lib.MetricWriter(workdir)
  level_kw = dict(snr_range=tuple(dc.snr_range), level_range=tuple(dc.level_range))
  start, pending, t0, last_dev = int(state.step), [], time.time(), {}
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json(indent=2))
  step = start
  for step in range(start + 1, tc.num_steps + 1):
    batch = mixing.mixture_batch(config.seed, (step - 1) * dc.batch_size, dc.batch_size, cleans,
                                 noises, seg, dc.speech_level, **level_kw)
    state, m = trainer.step(state, batch)
    pending.append(m)
    if step % tc.log_every == 0 or step == tc.num_steps:
      row = {k: float(np.mean([float(x[k]) for x in pending])) for k in pending[0]}
      row.update(skipped_updates=float(state.skipped), wall_minutes=(time.time() - t0) / 60)
      writer.write(step, row, prefix="train/")
      log.info("step %d: %s", step, {k: round(v, 4) for k, v in row.items()})
      pending = []
    if step % tc.eval_every == 0 or step == tc.num_steps:
      params = state.g_params
      last_dev = evaluate_lib.evaluate(lambda x: np.asarray(enhance(params, x)), dev, sr)
      writer.write(step, last_dev, prefix="dev/")
      log.info("step %d: dev SI-SDR %.2f dB (noisy %.2f), ESTOI %.3f (noisy %.3f)", step,
               last_dev["all/sisdr"], last_dev["all/sisdr_noisy"], last_dev["all/estoi"],
               last_dev["all/estoi_noisy"])
      ckpt.save(step, state, dict(config=config.to_dict(), num_params=n_g),
                {"dev_neg_sisdr": -last_dev["all/sisdr"]})
    elif step % tc.checkpoint_every == 0:
      ckpt.save(step, state, dict(config=config.to_dict(), num_params=n_g))
  writer.close()
  ckpt.close()
  summary = dict(step=step, generator_params=n_g, discriminator_params=n_d,
                 macs_per_second=macs * sr / hop, latency_ms=models.generator.frame.latency_ms,
                 dev=last_dev, wall_minutes=(time.time() - t0) / 60)
  with open(os.path.join(workdir, "train_summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  return summary
