"""Run-level evaluation: a training run folder or a teacher folder, on splits or a manifest.

    evaluate_run("runs/demo/kd", "best", manifest="my_clips.jsonl")
    evaluate_teacher("teachers/demo_hf", manifest="my_clips.jsonl")

A run folder describes itself (`train/runs.py`): its saved config gives the model, tokenizer,
buckets, data entries and decoding settings, so nothing but the folder (and a split or a
manifest) is needed; a `config` passed in overrides the data entries and decoding
(`config.data`, `config.eval`), never the model. A teacher folder (converted, or a Hugging Face
folder) is evaluated the same way with the given (or the base) config's data and decoding.

Evaluation never drops an utterance for its length (a longer one gets a bucket of its own); any
other skip is logged with its ids and listed in the summary (`skipped_ids`). Results (and
hypotheses) go to <folder>/eval/<split>_<tag>[_<decoder>]/.

Timing has two names: `eval_rtf` in a summary is that pass's seconds per audio second on all
the process's CPUs, compilation included; `real_time_factor` (`launch/rtf.py`) compiles every
shape first and runs pinned to a stated number of CPUs.
"""

from __future__ import annotations

import copy
import logging
import os
from typing import Any, Callable

import jax
import ml_collections

from configs import base as base_config
from distill_jax.convert import teacher_folder
from distill_jax.train import checkpoint as ckpt_lib
from distill_jax.train import evaluate as eval_lib
from distill_jax.train import runs
from distill_jax.train import splits as splits_lib
from distill_jax.train import steps

log = logging.getLogger(__name__)


def run_config(workdir: str,
               config: ml_collections.ConfigDict | None = None) -> ml_collections.ConfigDict:
  """The run's saved config, with `config`'s data entries and decoding when one is given."""
  saved = runs.saved_config(workdir)
  if config is None:
    return saved
  out = saved.copy_and_resolve_references()
  with out.unlocked():
    out.data = config.data.copy_and_resolve_references()
    out.eval = config.eval.copy_and_resolve_references()
  return out


def _greedy(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  if config.eval.decoder == "greedy":
    return config
  config = copy.deepcopy(config)
  config.eval.decoder = "greedy"
  return config


def checkpoint_forward(config: ml_collections.ConfigDict, workdir: str, which: str = "best"):
  """(jitted forward, params, tokenizer, step, utterance decoder) of a run's checkpoint."""
  model, params, tokenizer, step = runs.restore_student(workdir, which)
  if config.model.head == "ctc":
    return (jax.jit(steps.make_forward_step(model)), params, tokenizer, step,
            eval_lib.make_decoder(config.eval, tokenizer))
  # The head's own greedy / beam search runs inside the jitted forward step.
  return jax.jit(steps.make_forward_step(model, config.eval)), params, tokenizer, step, None


def teacher_forward(teacher_dir: str):
  """(jitted forward, params, tokenizer) of a teacher folder (converted or Hugging Face).

  forward(params, batch) -> dict(log_probs [B, Tt, V], paddings [B, Tt]): the frozen
  teacher's CTC posteriors, as the distillation step sees them.
  """
  teacher, tokenizer = teacher_folder.load_folder(teacher_dir)

  def fwd(p, batch):
    out = teacher.forward(p, batch["waveform"], batch["wave_paddings"])
    return dict(log_probs=out.log_probs, paddings=out.frame_paddings)
  return jax.jit(fwd), teacher.params, tokenizer


def _targets(config, splits: list[str] | None, manifest: str | None,
             name: str | None) -> dict[str, str]:
  """{result name: manifest path}: one manifest, or config.data entries (default eval.splits)."""
  if manifest:
    return {name or os.path.splitext(os.path.basename(manifest))[0]: manifest}
  names = splits or list(config.eval.splits)
  unknown = [s for s in names if s not in config.data]
  if unknown:
    raise ValueError(f"split(s) {unknown} are not entries of config.data "
                     f"({sorted(k for k, v in config.data.items() if isinstance(v, str))})")
  missing = [f"{s}={config.data[s]!r}" for s in names if not os.path.exists(config.data[s])]
  if missing:
    raise FileNotFoundError(f"configured split manifest(s) not found: {', '.join(missing)}")
  return {s: config.data[s] for s in names}


def load_eval_split(config, path: str, name: str, tokenizer):
  """A split for scoring (`splits.load_split(evaluation=True)`); skips logged with their ids."""
  dataset, report = splits_lib.load_split(config, path, name, tokenizer, evaluation=True)
  if report.skipped:
    log.warning("%s: %d utterance(s) not scored: %s", name, len(report.skipped),
                "; ".join(f"{s['id']} ({s['reason']}: {s['detail']})" for s in report.skipped))
  return dataset, report


def _evaluate_targets(config, forward: Callable, params: Any, tokenizer, decoder,
                      targets: dict[str, str], out_root: str, tag: str) -> dict[str, dict]:
  suffix = "" if config.eval.decoder == "greedy" else f"_{config.eval.decoder}"
  results = {}
  for split, path in targets.items():
    dataset, report = load_eval_split(config, path, split, tokenizer)
    res = eval_lib.evaluate(forward, params, dataset, tokenizer,
                            os.path.join(out_root, "eval", f"{split}_{tag}{suffix}"),
                            name=split, decoder=decoder)
    res.update(skipped=report.counts(), skipped_ids=[s["id"] for s in report.skipped],
               decoder=config.eval.decoder)
    if config.eval.decoder == "beam_lm":
      res.update(lm=config.eval.lm, lm_alpha=config.eval.lm_alpha, lm_beta=config.eval.lm_beta)
    results[split] = res
  return results


def evaluate_run(workdir: str, which: str = "best", *,
                 config: ml_collections.ConfigDict | None = None,
                 splits: list[str] | None = None, manifest: str | None = None,
                 name: str | None = None) -> dict[str, dict]:
  """Restores a run's checkpoint and evaluates its splits (or one manifest) with it.

  Results (and hypotheses) go to workdir/eval/<split>_step<step>[_<decoder>]/.
  """
  config = run_config(workdir, config)
  forward, params, tokenizer, step, decoder = checkpoint_forward(config, workdir, which)
  results = _evaluate_targets(config, forward, params, tokenizer, decoder,
                              _targets(config, splits, manifest, name), workdir,
                              ckpt_lib.tag(which, step))
  for res in results.values():
    res.update(step=step, checkpoint=str(which))
  return results


def evaluate_teacher(teacher_dir: str, *, config: ml_collections.ConfigDict | None = None,
                     splits: list[str] | None = None, manifest: str | None = None,
                     name: str | None = None, out_root: str | None = None) -> dict[str, dict]:
  """Evaluates a teacher folder (converted or Hugging Face) like a run's checkpoint.

  Data and decoding come from `config` (default: configs/base.py); the teacher's own tokenizer
  decodes (its vocabulary must be the one the references are written in). Results go to
  `out_root` (default: the teacher folder)/eval/<split>_teacher[_<decoder>]/.
  """
  config = config or base_config.get_config()
  forward, params, tokenizer = teacher_forward(teacher_dir)
  return _evaluate_targets(config, forward, params, tokenizer,
                           eval_lib.make_decoder(config.eval, tokenizer),
                           _targets(config, splits, manifest, name), out_root or teacher_dir,
                           "teacher")


def measure_rtf(*, config: ml_collections.ConfigDict | None = None, split: str = "test",
                manifest: str | None = None, workdir: str | None = None, which: str = "best",
                teacher_dir: str | None = None) -> dict[str, Any]:
  """`real_time_factor` (compilation excluded) of a run's checkpoint or a teacher, greedy."""
  if teacher_dir:
    config = _greedy(config or base_config.get_config())
    forward, params, tokenizer = teacher_forward(teacher_dir)
    what = dict(model="teacher", path=teacher_dir)
  else:
    config = _greedy(run_config(workdir, config))
    forward, params, tokenizer, step, _ = checkpoint_forward(config, workdir, which)
    what = dict(model="student", path=workdir, step=step)
  name, path = next(iter(_targets(config, [split], manifest, None).items()))
  dataset, _ = load_eval_split(config, path, name, tokenizer)
  return what | dict(split=name) | eval_lib.real_time_factor(forward, params, dataset, tokenizer)


def tune_lm_weights(workdir: str, which: str = "best", split: str = "dev", *,
                    config: ml_collections.ConfigDict | None = None,
                    alphas=(0.3, 0.5, 0.7, 1.0), betas=(0.0, 1.0, 2.0, 3.0)) -> dict[str, Any]:
  """Grid search of LM weight alpha and word bonus beta for 'beam_lm' on one split.

  The network runs once; each grid point only decodes. Returns the grid (alpha, beta, WER,
  CER) and the best point by WER.
  """
  config = run_config(workdir, config)
  if config.model.head != "ctc":
    raise ValueError(f"config.model.head={config.model.head!r}: LM weights are tuned for CTC "
                     "students (beam_lm)")
  forward, params, tokenizer, step, _ = checkpoint_forward(config, workdir, which)
  dataset, _ = load_eval_split(config, _targets(config, [split], None, None)[split], split,
                               tokenizer)
  _, _, log_probs = eval_lib.decode_dataset(forward, params, dataset, tokenizer,
                                            keep_log_probs=True)
  refs = [ex.text for ex in dataset.examples]
  grid = []
  eval_cfg = copy.deepcopy(config.eval)
  for alpha in alphas:
    for beta in betas:
      eval_cfg.lm_alpha, eval_cfg.lm_beta = float(alpha), float(beta)
      decoder = eval_lib.make_decoder(eval_cfg, tokenizer)
      hyps = [decoder(log_probs[ex.id]) for ex in dataset.examples]
      grid.append(dict(alpha=float(alpha), beta=float(beta), **eval_lib.score(refs, hyps)))
  best = min(grid, key=lambda g: g["wer"])
  return dict(step=step, split=split, grid=grid, best=best)
