"""Evaluation: decode a dataset with a student, score WER/CER with jiwer, time it.

Writes `hypotheses.tsv` (id, reference, hypothesis, per-utterance WER) and `summary.json`.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

import jax
import jiwer
import numpy as np

from distill_jax import text as text_lib
from distill_jax.data import pipeline
from distill_jax.decode import ctc as ctc_decode


def decode_dataset(forward: Callable, params: Any, dataset: pipeline.AsrDataset,
                   tokenizer: text_lib.CharTokenizer) -> tuple[dict[str, str], float]:
  """Greedy CTC decoding of every example. Returns ({id: hypothesis}, compute seconds)."""
  hyps, seconds = {}, 0.0
  for batch in pipeline.eval_batches(dataset):
    ids = batch.pop("ids")
    t0 = time.perf_counter()
    out = forward(params, batch)
    tokens, lengths = ctc_decode.ctc_greedy(out["log_probs"], out["paddings"],
                                            tokenizer.blank_id)
    tokens, lengths = np.asarray(tokens), np.asarray(lengths)
    seconds += time.perf_counter() - t0
    for r, uid in enumerate(ids):
      if uid:
        hyps[uid] = tokenizer.decode(tokens[r, :lengths[r]])
  return hyps, seconds


def score(refs: list[str], hyps: list[str]) -> dict[str, float]:
  """Corpus-level WER and CER (jiwer), on normalized text."""
  return dict(wer=float(jiwer.wer(refs, hyps)), cer=float(jiwer.cer(refs, hyps)))


def evaluate(forward: Callable, params: Any, dataset: pipeline.AsrDataset,
             tokenizer: text_lib.CharTokenizer, out_dir: str | None = None,
             name: str = "eval") -> dict[str, Any]:
  """Decodes, scores and (optionally) writes hypotheses.tsv and summary.json under out_dir."""
  hyps, seconds = decode_dataset(forward, params, dataset, tokenizer)
  refs = [ex.text for ex in dataset.examples]
  hyp_list = [hyps[ex.id] for ex in dataset.examples]
  result = score(refs, hyp_list)
  audio_seconds = dataset.total_seconds
  result.update(name=name, utterances=len(dataset), audio_hours=audio_seconds / 3600,
                rtf=seconds / max(audio_seconds, 1e-9), devices=jax.device_count())
  if out_dir:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "hypotheses.tsv"), "w", encoding="utf-8") as f:
      f.write("id\treference\thypothesis\twer\n")
      for ex, h in zip(dataset.examples, hyp_list):
        f.write(f"{ex.id}\t{ex.text}\t{h}\t{jiwer.wer(ex.text, h):.4f}\n")
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
      json.dump(result, f, indent=2)
  return result


def evaluate_checkpoint(config, workdir: str, which: str = "best", *,
                        splits: list[str] | None = None, manifest: str | None = None,
                        name: str | None = None) -> dict[str, dict]:
  """Restores a checkpoint and evaluates config splits (or one manifest) with it."""
  from distill_jax.train import loop, steps  # the trainer imports this module
  model, params, tokenizer, step = loop.restore_student(config, workdir, which)
  forward = jax.jit(steps.make_forward_step(model))
  if manifest:
    targets = {name or os.path.splitext(os.path.basename(manifest))[0]: manifest}
  else:
    names = splits or list(config.eval.splits)
    unknown = [s for s in names if s not in config.data]
    if unknown:
      raise ValueError(f"split(s) {unknown} are not entries of config.data")
    targets = {s: config.data[s] for s in names}
  results = {}
  for split, path in targets.items():
    dataset, report = loop.load_split(config, path, split, tokenizer)
    res = evaluate(forward, params, dataset, tokenizer,
                   os.path.join(workdir, "eval", f"{split}_step{step}"), name=split)
    res.update(step=step, skipped=report.counts())
    results[split] = res
  return results
