"""The training loop: data -> jitted data-parallel step -> metrics, evals, checkpoints.

`train_and_evaluate(config, workdir)` is what `launch/train.py` calls.
With `config.distill.teacher` set it distills: the train state holds {'student',
'projections'} params (the teacher is a frozen argument of the step, or its outputs come from
the offline cache), checkpoints record the teacher's path and params fingerprint, and resuming
with another teacher is an error. A workdir holding checkpoints resumes from the latest one,
data position included, and ends with the same parameters as an uninterrupted run.
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
import tqdm

from distill_jax.data import pipeline
from distill_jax.models import build
from distill_jax.train import checkpoint as ckpt_lib
from distill_jax.train import evaluate as evaluate_lib
from distill_jax.train import metrics as metrics_lib
from distill_jax.train import objectives
from distill_jax.train import parallel
from distill_jax.train import runs
from distill_jax.train import splits
from distill_jax.train import state as state_lib
from distill_jax.train import steps as steps_lib
from distill_jax.train import teacher as teacher_lib
from distill_jax.train import warm_start as warm_start_lib

log = logging.getLogger(__name__)

def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  os.makedirs(workdir, exist_ok=True)
  cfg_t = config.train
  main = parallel.is_main_process()  # the one process that writes files (multi-host)
  tokenizer = splits.load_tokenizer(config)
  if main:
    tokenizer.save(workdir)
  model = build.build_student(config.model, tokenizer.vocab_size, bos_id=tokenizer.bos_id,
                              eos_id=tokenizer.eos_id, blank_id=tokenizer.blank_id)

  train_ds, train_report = splits.load_split(config, config.data.train, "train", tokenizer)
  dev_ds, dev_report = splits.load_split(config, config.data.dev, "dev", tokenizer,
                                  config.data.dev_max_utterances)
  # Splits decoded at every evaluation for the record (curves), never for model selection.
  report_sets = {s: splits.load_split(config, config.data[s], s, tokenizer)[0]
                 for s in config.train.report_splits}
  reports = {"train": (train_report, train_ds), "dev": (dev_report, dev_ds)}
  if main:
    splits.write_data_report(workdir, reports)
  for rep in (train_report, dev_report):
    log.info("%s: kept %d utterances (%.2f h); skipped %s", rep.name, rep.kept,
             rep.kept_seconds / 3600, rep.counts() or "none")
  log.info("data parallel: %s over %d device(s), %d micro-batch(es) per device; batch sizes "
           "rounded down to multiples of %d", config.parallel, jax.device_count(),
           cfg_t.grad_accum_steps, splits.batch_multiple(config))
  log.info("train batch shapes (batch, samples, labels): %s", train_ds.batch_shapes())

  params = state_lib.init_params(model, train_ds.batch_shapes(), config.seed)
  if cfg_t.init_from:  # a warm start: another run's weights, a fresh optimizer and schedule
    params = warm_start_lib.warm_start_params(config, cfg_t.init_from, params, tokenizer)
  num_params = state_lib.count_params(params)
  log.info("student parameters: %s", f"{num_params:,}")
  teacher, spec, kd_meta = None, None, None
  if runs.is_distillation(config):
    if cfg_t.grad_accum_steps != 1:
      raise ValueError(f"train.grad_accum_steps={cfg_t.grad_accum_steps}: the distillation "
                       "step runs whole per-device batches (its three terms are normalized over "
                       "the global batch); use 1")
    teacher = teacher_lib.load_teacher(config, tokenizer)
    spec = teacher_lib.kd_spec(config, teacher)
    layers = teacher_lib.student_layers(config)
    params = steps_lib.init_distill_params(model, spec, params, layers,
                                           jax.random.key(config.seed + 1))
    kd_meta = dict(teacher_path=os.path.abspath(teacher.path),
                   teacher_fingerprint=teacher.fingerprint,
                   layer_pairs=[list(p) for p in spec.layer_pairs],
                   teacher_dim=spec.teacher_dim, student_layers=layers,
                   teacher_params=state_lib.count_params(teacher.params))
    log.info("distilling from %s (%s params, fingerprint %s...; %s): %s",
             teacher.path, f"{kd_meta['teacher_params']:,}", teacher.fingerprint[:12],
             f"cache {config.distill.cache}" if teacher.cache else "online", spec)
  tx = state_lib.make_optimizer(cfg_t)
  lr_schedule = state_lib.learning_rate_schedule(cfg_t)
  state = state_lib.create_state(params, tx, config.seed)

  ckpt = ckpt_lib.Checkpointer(workdir, keep_last=cfg_t.keep_last, keep_best=cfg_t.keep_best,
                               keep_every=cfg_t.keep_every, keep_steps=tuple(cfg_t.keep_steps))
  position, wall_offset = pipeline.Position(), 0.0
  if ckpt.latest_step() is not None:
    state, extra, step = ckpt.restore("latest", state)
    runs.check_resume_config(config, extra["config"])
    runs.check_resume_teacher(kd_meta, extra.get("distill"))
    position = pipeline.Position.from_dict(extra["data_position"])
    wall_offset = float(extra.get("wall_seconds", 0.0))
    log.info("resumed from step %d (data position %s)", step, position)

  start = int(state.step)
  head_loss = objectives.HeadLoss.from_config(config.model)
  if teacher is None:
    step_fn = steps_lib.make_train_step(model, tx, lr_schedule, tokenizer.blank_id,
                                        grad_accum_steps=cfg_t.grad_accum_steps,
                                        head=head_loss)
  else:
    step_fn = steps_lib.make_distill_train_step(
        model, tx, lr_schedule, spec, teacher_fn=None if teacher.cache else teacher.forward,
        blank_id=tokenizer.blank_id, head=head_loss)
  par = parallel.parallelize(step_fn, parallel.make_mesh(), mode=config.parallel,
                             num_frozen=0 if teacher is None else 1)
  frozen = () if teacher is None else (
      par.put_frozen(None if teacher.cache else teacher.params),)
  student_params = lambda st: st.params if teacher is None else st.params["student"]
  forward = jax.jit(steps_lib.make_forward_step(model))
  state = par.put_state(state)
  writer = metrics_lib.MetricWriter(workdir, enabled=main)

  def run_eval(step: int, wall: float) -> dict:
    params = parallel.local_copy(student_params(par.get_state(state)))
    res = evaluate_lib.evaluate(forward, params, dev_ds, tokenizer,
                                os.path.join(workdir, "eval", f"dev_step{step}") if main
                                else None, name="dev")
    writer.write(step, {"wer": res["wer"], "cer": res["cer"]}, prefix="dev/")
    for name, ds in report_sets.items():
      r = evaluate_lib.evaluate(forward, params, ds, tokenizer, name=name)
      writer.write(step, {"wer": r["wer"], "cer": r["cer"]}, prefix=f"{name}/")
    writer.write(step, {"wall_minutes": wall / 60}, prefix="train/")
    return res

  def save(step: int, wall: float, it: pipeline.BatchIterator, metrics=None) -> None:
    ckpt.save(step, par.get_state(state),
              dict(data_position=it.position.to_dict(), config=config.to_dict(),
                   wall_seconds=wall, num_params=num_params, distill=kd_meta), metrics)

  t_start = time.time() - wall_offset
  end = min(cfg_t.num_steps, cfg_t.stop_at_step or cfg_t.num_steps)
  if start and (start >= end or (cfg_t.max_wall_minutes
                                 and wall_offset > 60 * cfg_t.max_wall_minutes)):
    log.info("the run in %s already ended at step %d (%.1f min): nothing to train", workdir,
             start, wall_offset / 60)
    end = start
  shapes_seen: set = set()
  pending, window_audio, window_t0 = [], 0.0, time.time()
  last_dev: dict = {}
  it = pipeline.BatchIterator(train_ds, seed=config.seed, position=position,
                              prefetch=config.data.prefetch)
  bar = tqdm.tqdm(total=cfg_t.num_steps, initial=start, desc="train", unit="step",
                  disable=not config.progress, dynamic_ncols=True)
  step = start
  try:
    for step in range(start + 1, end + 1):
      batch = next(it)
      shapes_seen.add(batch["waveform"].shape)
      window_audio += float(np.sum(1.0 - batch["wave_paddings"])) / pipeline.SAMPLE_RATE
      if teacher is not None and teacher.cache is not None:
        batch = teacher.cache.add_to_batch(batch)
      state, m = par.step(state, par.put_batch(batch), *frozen)
      pending.append(m)
      bar.update(1)
      wall = time.time() - t_start
      last = step == end or (cfg_t.max_wall_minutes and wall > 60 * cfg_t.max_wall_minutes)
      if step % cfg_t.log_every == 0 or last:
        ms = par.get_metrics(pending)
        pending = []
        now = time.time()
        row = {k: float(np.mean([x[k] for x in ms])) for k in ms[0]
               if k in ("loss", "grad_norm", "lr") or k.startswith("loss_")}
        row.update(infeasible=float(sum(x["infeasible"] for x in ms)),
                   skipped_updates=float(ms[-1]["skipped"]),
                   audio_sec_per_sec=window_audio / max(now - window_t0, 1e-9),
                   wall_minutes=wall / 60, compiled_shapes=len(shapes_seen))
        writer.write(step, row, prefix="train/")
        bar.set_postfix(loss=f"{row['loss']:.3f}", aps=f"{row['audio_sec_per_sec']:.0f}")
        window_audio, window_t0 = 0.0, time.time()
      if step % cfg_t.eval_every == 0 or last:
        last_dev = run_eval(step, wall)
        bar.write(f"step {step}: dev WER {100 * last_dev['wer']:.2f}%  "
                  f"CER {100 * last_dev['cer']:.2f}%  ({wall / 60:.1f} min)")
        save(step, wall, it, {"dev_wer": last_dev["wer"]})
        window_t0 = time.time()  # evaluation time is not training throughput
      elif step % cfg_t.checkpoint_every == 0 or step in cfg_t.keep_steps:
        save(step, wall, it)
      if last:
        break
  finally:
    it.close()
    bar.close()
    if main:
      splits.write_data_report(workdir, reports)  # now with the files that failed at batch time
  summary_path = os.path.join(workdir, "train_summary.json")
  if end == start and os.path.exists(summary_path):  # an ended run: its summary stands
    writer.close()
    ckpt.close()
    with open(summary_path) as f:
      return json.load(f)
  compiled = par.compiled_programs() or len(shapes_seen)
  log.info("compiled %d train-step programs for %d batch shapes", compiled, len(shapes_seen))
  writer.close()
  ckpt.close()
  png = (metrics_lib.plot_curves(writer.jsonl_path, os.path.join(workdir, "curves.png"),
                                 title=config.get("name", "")) if main else None)
  skipped = int(jax.device_get(parallel.local_copy(par.get_state(state).skipped)))
  summary = dict(step=step, num_params=num_params, train_hours=train_ds.total_seconds / 3600,
                 dev=last_dev, compiled_programs=compiled, wall_minutes=(time.time() - t_start)
                 / 60, curves=png, skipped_updates=skipped)
  if main:
    with open(summary_path, "w") as f:
      json.dump(summary, f, indent=2)
  return summary
