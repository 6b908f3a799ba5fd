"""Post-training adaptation: LoRA, QLoRA or full fine-tuning of the teacher or of a student.

`python -m launch.adapt --config=configs/adapt_teacher.py --workdir=runs/adapt` runs `run`:

1. The model to adapt (`config.adapt.target`):
   - 'teacher': the converted teacher `config.distill.teacher` (a Hugging Face folder or a
     launch.convert_teacher output), as `Wav2Vec2Trainee` (the waveform normalized as its
     processor does) with CTC on the new domain;
   - 'student': the best checkpoint of the CTC student run `config.adapt.student_workdir`
     (personalization: at most `config.adapt.max_train_seconds` of audio, 300 by default; more
     is an error naming the manifest and its duration).
2. `config.adapt.mode`: 'lora' (float base frozen, adapters of rank `rank` on the kernels
   matching `targets`), 'qlora' (the same with the base's `quantize` kernels stored as NF4 and
   dequantized one layer at a time, adapters/lora.py) or 'full' (every parameter trained: the
   reference for how much the parameter-efficient modes forget).
3. `config.adapt.num_steps` AdamW steps (warmup + cosine, `config.adapt.lr`, the gradient
   clipped) on `config.adapt.train`, batches from the input pipeline as in training; a
   non-finite loss or gradient skips the update and is counted.
4. Before and after: WER/CER on every `config.adapt.eval` manifest (the new domain and the
   original one: how much each mode forgets), with every decoder of `config.adapt.decoders`
   ('greedy', 'beam', 'beam_lm' with `config.eval`'s beam size and n-gram LM). "Before" is the
   mode's starting model (for 'qlora' the NF4 base, which differs slightly from the float one).
5. WORKDIR/adapters: the adapters alone (Orbax, `adapters/checkpoint.py`, tied to a fingerprint
   of their base; none for 'full'), and WORKDIR/results.{json,md}.

An adapted teacher is distilled from with `config.distill.teacher_adapter=WORKDIR/adapters`
(`train/teacher.load_teacher` merges them into its weights: `adapters/merge.merge_saved_adapters`).

One device (adaptation runs are minutes long); the same code runs on a GPU or TPU.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from distill_jax.adapters import checkpoint as adapter_ckpt
from distill_jax.adapters import lora
from distill_jax.data import pipeline
from distill_jax.models import build
from distill_jax.models.wav2vec2_trainee import Wav2Vec2Trainee
from distill_jax.train import evaluate as evaluate_lib
from distill_jax.train import objectives, runs, splits, steps
from distill_jax.train import state as state_lib
from distill_jax.train import teacher as teacher_lib

log = logging.getLogger(__name__)

MODES = ("lora", "qlora", "full")
BATCH_KEYS = ("waveform", "wave_paddings", "labels", "label_paddings", "weights")
TARGETS = ("teacher", "student")


def _check(cfg: ml_collections.ConfigDict) -> None:
  if cfg.mode not in MODES:
    raise ValueError(f"config.adapt.mode={cfg.mode!r} is not one of {MODES}")
  if cfg.target not in TARGETS:
    raise ValueError(f"config.adapt.target={cfg.target!r} is not one of {TARGETS}")
  if not cfg.train:
    raise ValueError("config.adapt.train is empty: give the manifest of the new domain")
  if cfg.num_steps < 1:
    raise ValueError(f"config.adapt.num_steps={cfg.num_steps} must be >= 1")


def load_base(config: ml_collections.ConfigDict):
  """(model, float params, tokenizer, output_frames(num_samples), description) of the target."""
  cfg = config.adapt
  if cfg.target == "teacher":
    tokenizer = splits.load_tokenizer(config)
    t_config = config.copy_and_resolve_references()
    t_config.distill.cache = ""
    t_config.distill.teacher_adapter = ""
    teacher = teacher_lib.load_teacher(t_config, tokenizer)
    model = Wav2Vec2Trainee(teacher.teacher.config)
    frames = teacher.teacher.num_frames
    return model, teacher.params, tokenizer, frames, f"teacher {teacher.path}"
  if not cfg.student_workdir:
    raise ValueError("config.adapt.target='student' needs config.adapt.student_workdir (a CTC "
                     "student run folder)")
  run_config = runs.saved_config(cfg.student_workdir)
  if run_config.model.head != "ctc":
    raise ValueError(f"{cfg.student_workdir}: a {run_config.model.head!r} student; adaptation "
                     "supports CTC students")
  model, params, tokenizer, step = runs.restore_student(cfg.student_workdir, "best")
  frames = lambda n: build.output_frames(run_config.model, n)
  return model, params, tokenizer, frames, f"student {cfg.student_workdir} (step {step})"


def _load(config, manifest: str, name: str, tokenizer, frames) -> pipeline.AsrDataset:
  dataset, report = splits.load_split(config, manifest, name, tokenizer, output_frames=frames)
  if not len(dataset):
    raise ValueError(f"{manifest}: no usable utterance (skipped: {report.counts()})")
  if report.counts():
    log.warning("%s: skipped %s", manifest, report.counts())
  return dataset


def make_step(model, tx, mode: str, base: Any, blank_id: int):
  """step(trainable, opt_state, batch, key) -> (trainable, opt_state, loss, ok), jitted.

  trainable: the adapters ('lora' / 'qlora'; `base` is the frozen float or NF4 params) or all
  params ('full'). The loss is CTC summed over the batch over its target tokens.
  """
  head = objectives.HeadLoss()

  def loss_fn(trainable, batch, key):
    k_drop, k_spec, k_aug = jax.random.split(key, 3)
    rngs = {"dropout": k_drop, "specaug": k_spec, "augment": k_aug}
    args = (batch["waveform"], batch["wave_paddings"], batch["labels"], batch["label_paddings"])
    if mode == "full":
      out = objectives.apply_student(model, trainable, *args, train=True, rngs=rngs)
    else:
      with lora.lora_interceptor(trainable, deterministic=False):
        out = objectives.apply_student(model, base, *args, train=True, rngs=rngs)
    res = objectives.hard_loss(model, head, out, batch["labels"], batch["label_paddings"],
                               blank_id)
    weights = res["weights"] * batch["weights"]
    tokens = jnp.sum(jnp.sum(1.0 - batch["label_paddings"], 1) * weights)
    return jnp.sum(res["per_example"] * weights) / jnp.maximum(tokens, 1.0)

  def step(trainable, opt_state, batch, key):
    loss, grads = jax.value_and_grad(loss_fn)(trainable, batch, key)
    trainable, opt_state, ok = steps.guarded_update(tx, trainable, opt_state, loss, grads)
    return trainable, opt_state, loss, ok

  return jax.jit(step, donate_argnums=(0, 1))


def make_forward(model, mode: str, base: Any):
  """fwd(trainable, batch) -> dict(log_probs, paddings), jitted, for `evaluate.evaluate`."""
  def fwd(trainable, batch):
    args = (batch["waveform"], batch["wave_paddings"])
    if mode == "full":
      out = model.apply({"params": trainable}, *args, train=False)
    else:
      out = lora.lora_apply(model, {"params": base}, trainable, *args, train=False)
    return dict(log_probs=jax.nn.log_softmax(out["logits"]), paddings=out["paddings"])
  return jax.jit(fwd)


def eval_names(config) -> list[tuple[str, str, str]]:
  """(result key, eval set name, decoder) for every `config.adapt.eval` set and every decoder
  of `config.adapt.decoders`; the key is the set's name for 'greedy', NAME_DECODER otherwise."""
  decoders = tuple(config.adapt.decoders)
  bad = [d for d in decoders if d not in evaluate_lib.DECODERS]
  if bad or not decoders:
    raise ValueError(f"config.adapt.decoders={decoders}: give one or more of "
                     f"{evaluate_lib.DECODERS}")
  return [(name if d == "greedy" else f"{name}_{d}", name, d)
          for d in decoders for name in config.adapt.eval]


def eval_sets(config, tokenizer, frames) -> list[tuple[str, pipeline.AsrDataset, Any]]:
  """(result key, dataset, utterance decoder or None for greedy) per `eval_names` entry; each
  manifest is read and each decoder (the LM for 'beam_lm') built once, for before and after."""
  datasets, decoders, out = {}, {}, []
  for key, name, kind in eval_names(config):
    if name not in datasets:
      datasets[name] = _load(config, config.adapt.eval[name], name, tokenizer, frames)
    if kind not in decoders:
      eval_cfg = config.eval.copy_and_resolve_references()
      eval_cfg.decoder = kind
      decoders[kind] = evaluate_lib.make_decoder(eval_cfg, tokenizer)
    out.append((key, datasets[name], decoders[kind]))
  return out


def _evaluate_all(sets, fwd, trainable, tokenizer, workdir, tag) -> dict:
  out = {}
  for key, dataset, decoder in sets:
    res = evaluate_lib.evaluate(fwd, trainable, dataset, tokenizer,
                                os.path.join(workdir, "eval", f"{key}_{tag}"), name=key,
                                decoder=decoder)
    out[key] = {k: res[k] for k in ("wer", "cer", "utterances", "audio_hours")}
    log.info("%s %s: WER %.2f%%  CER %.2f%%", tag, key, 100 * res["wer"], 100 * res["cer"])
  return out


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  cfg = config.adapt
  _check(cfg)
  eval_names(config)  # a wrong decoder name fails before any training
  os.makedirs(workdir, exist_ok=True)
  t0 = time.time()
  model, params, tokenizer, frames, what = load_base(config)
  train_ds = _load(config, cfg.train, "adapt_train", tokenizer, frames)
  seconds = train_ds.total_seconds
  if cfg.target == "student" and cfg.max_train_seconds and seconds > cfg.max_train_seconds:
    raise ValueError(f"config.adapt.train={cfg.train}: {seconds:.1f} s of audio, more than "
                     f"config.adapt.max_train_seconds={cfg.max_train_seconds} (personalization "
                     "uses at most 5 minutes of the voice)")
  num_params = state_lib.count_params(params)
  if cfg.mode == "full":
    base, trainable, trained = None, params, num_params
  else:
    base = lora.quantize_base(params, list(cfg.quantize)) if cfg.mode == "qlora" else params
    wav = jnp.zeros((1, 16000), jnp.float32)  # which input axes each Dense contracts
    layouts = lora.dense_layouts(model, wav, wav, train=False)
    trainable = lora.init_lora(params, list(cfg.targets), rank=cfg.rank, alpha=cfg.alpha,
                               rng=jax.random.key(cfg.seed), dropout=cfg.dropout,
                               layouts=layouts)
    trained = lora.count_lora_params(trainable, params).trainable
  log.info("adapting %s (%s params) with %s: %s trainable (%.2f%%) on %.1f s of audio", what,
           f"{num_params:,}", cfg.mode, f"{trained:,}", 100 * trained / num_params, seconds)
  fwd = make_forward(model, cfg.mode, base)
  sets = eval_sets(config, tokenizer, frames)
  before = _evaluate_all(sets, fwd, trainable, tokenizer, workdir, "before")

  tx = state_lib.make_optimizer(cfg)
  opt_state = tx.init(trainable)
  step_fn = make_step(model, tx, cfg.mode, base, tokenizer.blank_id)
  # Partial batches are kept (filler rows weigh 0): a few minutes of a voice may not fill one.
  batches = pipeline.BatchIterator(train_ds, seed=cfg.seed, shuffle=True, drop_remainder=False)
  losses, skipped, t_train = [], 0, time.time()
  key = jax.random.key(cfg.seed + 1)
  try:
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel
    for i in tqdm(range(cfg.num_steps), desc=f"adapt {cfg.mode}", disable=not config.progress):
      batch = {k: jnp.asarray(v) for k, v in next(batches).items() if k in BATCH_KEYS}
      trainable, opt_state, loss, ok = step_fn(trainable, opt_state, batch,
                                               jax.random.fold_in(key, i))
      losses.append(float(loss))
      skipped += int(not bool(ok))
  finally:
    batches.close()
  train_minutes = (time.time() - t_train) / 60
  after = _evaluate_all(sets, fwd, trainable, tokenizer, workdir, "after")

  adapter_path = None
  if cfg.mode != "full":
    adapter_path = os.path.join(workdir, "adapters")
    adapter_ckpt.save_adapters(adapter_path, trainable, base, patterns=list(cfg.targets),
                               metadata=dict(mode=cfg.mode, target=cfg.target, model=what,
                                             quantize=list(cfg.quantize)
                                             if cfg.mode == "qlora" else [],
                                             steps=cfg.num_steps, train=cfg.train),
                               overwrite=True)
  out = dict(target=cfg.target, model=what, mode=cfg.mode, num_params=num_params,
             trainable_params=trained, trainable_fraction=trained / num_params,
             train_manifest=cfg.train, train_seconds=seconds, steps=cfg.num_steps,
             skipped_updates=skipped, first_loss=losses[0], last_loss=losses[-1],
             train_minutes=train_minutes, wall_minutes=(time.time() - t0) / 60,
             before=before, after=after, adapters=adapter_path,
             relative_wer_change={k: (after[k]["wer"] - before[k]["wer"])
                                  / max(before[k]["wer"], 1e-9) for k in before})
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(out, f, indent=2)
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(results_table([out]))
  return out


def results_table(runs: list[dict]) -> str:
  """Markdown: a row per run; WER before -> after and the relative change per eval set."""
  names = list(dict.fromkeys(k for r in runs for k in r["before"]))
  head = ["mode", "trainable", "steps", "train min"] + [f"{n} WER before -> after"
                                                        for n in names]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in runs:
    cells = [r["mode"], f"{r['trainable_params']:,} ({100 * r['trainable_fraction']:.2f}%)",
             str(r["steps"]), f"{r['train_minutes']:.1f}"]
    for n in names:
      b, a = r["before"].get(n), r["after"].get(n)
      cells.append(f"{100 * b['wer']:.1f}% -> {100 * a['wer']:.1f}% "
                   f"({100 * r['relative_wer_change'][n]:+.0f}%)" if b and a else "")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"
