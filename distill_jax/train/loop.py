"""The training loop: data -> jitted data-parallel step -> metrics, evals, checkpoints.

`train_and_evaluate(config, workdir)` is what `launch/train.py` and `launch/distill.py` call.
With `config.distill.teacher` set it distills: the train state holds {'student',
'projections'} params (the teacher is a frozen argument of the step, or its outputs come from
the offline cache), checkpoints record the teacher's path and params fingerprint, and resuming
with another teacher is an error. A workdir holding checkpoints resumes from the latest one,
data position included, and ends with the same parameters as an uninterrupted run.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from distill_jax import evaluate as evaluate_lib
from distill_jax import text as text_lib
from distill_jax.data import manifest as manifest_lib
from distill_jax.data import pipeline
from distill_jax.models import build
from distill_jax.train import checkpoint as ckpt_lib
from distill_jax.train import metrics as metrics_lib
from distill_jax.train import objectives
from distill_jax.train import parallel
from distill_jax.train import state as state_lib
from distill_jax.train import steps as steps_lib
from distill_jax.train import teacher as teacher_lib
from distill_jax.train import warm_start as warm_start_lib

log = logging.getLogger(__name__)

# Config sections that must match between a checkpoint and the run resuming it.
RESUME_KEYS = ("model", "seed", "data.train", "data.buckets", "data.batch_seconds")


def load_tokenizer(config: ml_collections.ConfigDict) -> text_lib.CharTokenizer:
  return (text_lib.CharTokenizer.from_file(config.tokenizer.vocab) if config.tokenizer.vocab
          else text_lib.CharTokenizer())


def batch_multiple(config: ml_collections.ConfigDict) -> int:
  """Batch sizes are multiples of this: devices x gradient-accumulation micro-batches."""
  return jax.device_count() * config.train.grad_accum_steps


def bucket_spec(config: ml_collections.ConfigDict) -> pipeline.BucketSpec:
  return pipeline.BucketSpec(boundaries=tuple(config.data.buckets),
                             batch_seconds=config.data.batch_seconds,
                             shards=batch_multiple(config))


def load_split(config: ml_collections.ConfigDict, manifest_path: str, name: str,
               tokenizer: text_lib.CharTokenizer, max_utterances: int = 0,
               progress: bool = True, output_frames=None
               ) -> tuple[pipeline.AsrDataset, pipeline.DataReport]:
  """A manifest as a bucketed dataset; `output_frames(num_samples)` (default: the configured
  model's) decides which transcripts are too long for the model's frames."""
  utts = manifest_lib.read_manifest(manifest_path)
  if max_utterances:
    utts = utts[:max_utterances]
  d = config.data
  return pipeline.prepare_dataset(
      utts, tokenizer, bucket_spec(config), name=name,
      min_output_frames=output_frames or functools.partial(build.output_frames, config.model),
      progress=progress, min_seconds=d.min_seconds, max_seconds=d.max_seconds,
      audio_in_memory={"auto": None, "yes": True, "no": False}[d.audio_in_memory],
      text_options=dict(language=d.language))


def write_data_report(workdir: str, reports: dict) -> None:
  """workdir/data_report.json: per split, what was kept and every skipped utterance with its
  reason, from preparation and (`skipped_at_batch_time`) from per-batch decoding.

  Args:
    reports: {split name: (pipeline.DataReport, pipeline.AsrDataset)}.
  """
  out = {name: rep.to_dict() | {"skipped_at_batch_time": list(ds.runtime_skips)}
         for name, (rep, ds) in reports.items()}
  tmp = os.path.join(workdir, "data_report.json.tmp")
  with open(tmp, "w") as f:
    json.dump(out, f, indent=1)
  os.replace(tmp, os.path.join(workdir, "data_report.json"))


def init_params(model, dataset: pipeline.AsrDataset, seed: int) -> Any:
  b, s, _ = min(dataset.batch_shapes(), key=lambda x: x[1])
  wav = jnp.zeros((1, s), jnp.float32)
  return jax.jit(functools.partial(model.init, train=False))(
      {"params": jax.random.key(seed)}, wav, jnp.zeros_like(wav))["params"]


def config_value(cfg: ml_collections.ConfigDict, dotted: str):
  """The value at a dotted key ('data.train'), nested ConfigDicts as plain dicts."""
  for part in dotted.split("."):
    cfg = cfg[part]
  return cfg.to_dict() if isinstance(cfg, ml_collections.ConfigDict) else cfg


# config.model keys that change training only (no parameter): a warm start may change them.
WARM_START_FREE = ("specaug_enabled", "specaug", "vtlp_enabled", "vtlp", "speed_perturb_enabled",
                   "speed_perturb")


def as_json(v: Any) -> Any:
  """v as JSON gives it back (tuples were stored as lists), for comparing configs."""
  return json.loads(json.dumps(v))


def check_resume_config(config: ml_collections.ConfigDict, saved: dict) -> None:
  """Raises naming the config entries that differ from the checkpoint's run."""
  old = ml_collections.ConfigDict(saved)
  diffs = [k for k in RESUME_KEYS
           if as_json(config_value(config, k)) != as_json(config_value(old, k))]
  if diffs:
    raise ValueError(f"the checkpoint in this workdir was made with a different {diffs}; "
                     "use a new --workdir or the original config")


def is_distillation(config: ml_collections.ConfigDict) -> bool:
  return bool(config.distill.teacher)


def check_resume_teacher(current: dict | None, saved: dict | None) -> None:
  """Raises when a run resumes with another teacher than its checkpoint was made with."""
  cur = current and current["teacher_fingerprint"]
  old = saved and saved.get("teacher_fingerprint")
  if cur != old:
    what = lambda m: (f"teacher {m['teacher_path']} (params fingerprint "
                      f"{m['teacher_fingerprint'][:12]}...)" if m else "no teacher")
    raise ValueError(f"the checkpoint in this workdir was trained with {what(saved)}, this run "
                     f"has {what(current)}; use a new --workdir or the original teacher")


def warm_start_params(config: ml_collections.ConfigDict, source: str, params: Any,
                      tokenizer: text_lib.CharTokenizer | None = None) -> Any:
  """The student params of run `source`'s latest checkpoint, for `config.train.init_from`.

  The source's model config must be this run's (the params tree and shapes are then equal)
  except for the training-time augmentations (`WARM_START_FREE`: a later phase may add them);
  a difference is an error naming the config keys. A Hugging Face folder (config.json) instead
  goes through `warm_start.hf_warm_start_params` (needs `tokenizer`). Only a run's first start reads it:
  a resumed run continues from its own checkpoint.
  """
  if warm_start_lib.is_hf_folder(source):
    if tokenizer is None:
      raise ValueError("warm_start_params: a Hugging Face folder needs the run's tokenizer")
    return warm_start_lib.hf_warm_start_params(config, source, params, tokenizer)
  old = saved_config(source)
  new_model, old_model = as_json(config.model.to_dict()), as_json(old.model.to_dict())
  diffs = sorted(k for k in set(new_model) | set(old_model)
                 if new_model.get(k) != old_model.get(k) and k not in WARM_START_FREE)
  if diffs:
    raise ValueError(f"config.train.init_from={source!r}: its model config differs in "
                     f"model.{{{', '.join(diffs)}}}")
  _, loaded, _, step = restore_student(old, source, "latest")
  warm_start_lib.check_params_fit(source, loaded, params)
  log.info("warm start from %s (step %d): fresh optimizer state and schedule", source, step)
  return loaded


def saved_extra(workdir: str) -> dict[str, Any]:
  """What a run saved beside its latest checkpoint's arrays (config, data position, teacher)."""
  ckpt = ckpt_lib.Checkpointer(workdir, read_only=True)
  try:
    if ckpt.latest_step() is None:
      raise FileNotFoundError(f"no checkpoints in {ckpt.directory}: not a training run folder")
    return ckpt.restore_extra("latest")
  finally:
    ckpt.close()


def saved_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run saved with its latest checkpoint."""
  return ml_collections.ConfigDict(saved_extra(workdir)["config"])


def restore_student(config: ml_collections.ConfigDict, workdir: str, which: str | int = "latest",
                    with_projections: bool = False):
  """(model, student params, tokenizer, step) from a workdir's checkpoint, for evaluation.

  For a distillation run (`config.distill.teacher` set, as in training) the checkpoint also
  holds the hidden-state projections; only the student's params are returned, unless
  `with_projections` (then {'student': ..., 'projections': ...}, as trained).
  """
  tokenizer = text_lib.CharTokenizer.from_file(workdir)
  model = build.build_student(config.model, tokenizer.vocab_size, bos_id=tokenizer.bos_id,
                              eos_id=tokenizer.eos_id, blank_id=tokenizer.blank_id)
  wav = jnp.zeros((1, 16000), jnp.float32)
  ckpt = ckpt_lib.Checkpointer(workdir, read_only=True)

  def shapes():
    params = jax.eval_shape(functools.partial(model.init, train=False),
                            {"params": jax.random.key(0)}, wav, wav)["params"]
    if is_distillation(config):
      kd = ckpt.restore_extra(which)["distill"]
      spec = steps_lib.KdSpec(layer_pairs=tuple(map(tuple, kd["layer_pairs"])),
                              teacher_dim=kd["teacher_dim"])
      params = jax.eval_shape(
          lambda p: steps_lib.init_distill_params(model, spec, p, kd["student_layers"],
                                                  jax.random.key(0)), params)
    return params

  tx = state_lib.make_optimizer(config.train)
  target = jax.eval_shape(lambda p: state_lib.create_state(p, tx, 0), shapes())
  state, _, step = ckpt.restore(which, target)
  ckpt.close()
  params = (state.params["student"] if is_distillation(config) and not with_projections
            else state.params)
  return model, params, tokenizer, step


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  os.makedirs(workdir, exist_ok=True)
  cfg_t = config.train
  main = parallel.is_main_process()  # the one process that writes files (multi-host)
  tokenizer = load_tokenizer(config)
  if main:
    tokenizer.save(workdir)
  model = build.build_student(config.model, tokenizer.vocab_size, bos_id=tokenizer.bos_id,
                              eos_id=tokenizer.eos_id, blank_id=tokenizer.blank_id)

  train_ds, train_report = load_split(config, config.data.train, "train", tokenizer)
  dev_ds, dev_report = load_split(config, config.data.dev, "dev", tokenizer,
                                  config.data.dev_max_utterances)
  # Splits decoded at every evaluation for the record (curves), never for model selection.
  report_sets = {s: load_split(config, config.data[s], s, tokenizer)[0]
                 for s in config.train.report_splits}
  reports = {"train": (train_report, train_ds), "dev": (dev_report, dev_ds)}
  if main:
    write_data_report(workdir, reports)
  for rep in (train_report, dev_report):
    log.info("%s: kept %d utterances (%.2f h); skipped %s", rep.name, rep.kept,
             rep.kept_seconds / 3600, rep.counts() or "none")
  log.info("data parallel: %s over %d device(s), %d micro-batch(es) per device; batch sizes "
           "rounded down to multiples of %d", config.parallel, jax.device_count(),
           cfg_t.grad_accum_steps, batch_multiple(config))
  log.info("train batch shapes (batch, samples, labels): %s", train_ds.batch_shapes())

  params = init_params(model, train_ds, config.seed)
  if cfg_t.init_from:  # a warm start: another run's weights, a fresh optimizer and schedule
    params = warm_start_params(config, cfg_t.init_from, params, tokenizer)
  num_params = state_lib.count_params(params)
  log.info("student parameters: %s", f"{num_params:,}")
  teacher, spec, kd_meta = None, None, None
  if is_distillation(config):
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
    check_resume_config(config, extra["config"])
    check_resume_teacher(kd_meta, extra.get("distill"))
    position = pipeline.Position.from_dict(extra["data_position"])
    wall_offset = float(extra.get("wall_seconds", 0.0))
    log.info("resumed from step %d (data position %s)", step, position)

  start = int(state.step)
  head_loss = objectives.HeadLoss.from_config(config.model)
  if teacher is None:
    step_fn = steps_lib.make_ctc_train_step(model, tx, lr_schedule, tokenizer.blank_id,
                                            grad_accum_steps=cfg_t.grad_accum_steps,
                                            head=head_loss)
  else:
    step_fn = steps_lib.make_distill_train_step(
        model, tx, lr_schedule, spec, teacher_fn=None if teacher.cache else teacher.fn,
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
      write_data_report(workdir, reports)  # now with the files that failed at batch time
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
