"""The main job on the embedded default: corpus -> train -> evaluate -> results table.

Each stage is cached: the corpus build is a no-op when the corpus exists, training resumes from
(or ends at) the workdir's last checkpoint, the n-gram LM is built once. The best checkpoint is
evaluated with greedy decoding and, when `config.eval.lm` is set, with beam search + the word
n-gram LM estimated on the corpus's training text. Results go to `workdir/results.{md,json}`.
"""

from __future__ import annotations

import json
import logging
import os
import time

import ml_collections

from distill_jax import evaluate
from distill_jax.data import local, synthetic
from distill_jax.decode import ngram
from distill_jax.train import loop, metrics

log = logging.getLogger(__name__)


def prepare_data(config: ml_collections.ConfigDict) -> dict:
  """Builds (or reuses) the synthetic corpus and the real-English manifest."""
  summary = synthetic.build_corpus(config.data.corpus, config.data.corpus_dir)
  folders = [f for f in config.data.real_english_folders if os.path.isdir(f)]
  if folders:
    local.manifest_from_folders(folders, config.data.real_english)
  else:
    log.warning("no real-speech folders found (%s): real English is not evaluated",
                list(config.data.real_english_folders))
  return summary


def prepare_lm(config: ml_collections.ConfigDict) -> str | None:
  """Builds the word n-gram LM `config.eval.lm` from the corpus training text if missing."""
  path = config.eval.lm
  if path and not os.path.exists(path):
    lm = ngram.build_arpa(synthetic.language_model_text(config.data.corpus), path,
                          order=config.eval.lm_order)
    log.info("built %d-gram LM %s (%d words)", config.eval.lm_order, path, len(lm.vocabulary))
  return path or None


def results_table(r: dict) -> str:
  rows = [("corpus train hours", f"{r['corpus_train_hours']:.2f}"),
          ("student parameters", f"{r['num_params']:,}"),
          ("training steps", str(r["steps"])),
          ("training throughput (audio s / s)", f"{r['audio_sec_per_sec']:.0f}"),
          ("training minutes", f"{r['train_minutes']:.1f}")]
  for decoder, results in r["eval"].items():
    for split, res in results.items():
      rows.append((f"{split} WER / CER, {decoder} ({res['utterances']} utts)",
                   f"{100 * res['wer']:.1f}% / {100 * res['cer']:.1f}%"))
  rows.append(("wall time, whole job (minutes)", f"{r['wall_minutes']:.1f}"))
  lines = ["| metric | value |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows]
  return "\n".join(lines) + "\n"


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  t0 = time.time()
  corpus = prepare_data(config)
  train = loop.train_and_evaluate(config, workdir)
  splits = [s for s in config.eval.splits
            if s != "real_english" or os.path.exists(config.data.real_english)]
  results = {"greedy": evaluate.evaluate_checkpoint(config, workdir, "best", splits=splits)}
  if prepare_lm(config):
    lm_config = config.copy_and_resolve_references()
    lm_config.eval.decoder = "beam_lm"
    results[f"beam {config.eval.beam_size} + {config.eval.lm_order}-gram LM"] = (
        evaluate.evaluate_checkpoint(lm_config, workdir, "best", splits=splits))
  rows = metrics.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  aps = [r["train/audio_sec_per_sec"] for r in rows if "train/audio_sec_per_sec" in r]
  out = dict(name=config.name, corpus_train_hours=corpus["splits"]["train"]["hours"],
             num_params=train["num_params"], steps=train["step"],
             audio_sec_per_sec=sorted(aps)[len(aps) // 2] if aps else 0.0,
             train_minutes=train["wall_minutes"], eval=results,
             wall_minutes=(time.time() - t0) / 60)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(out, f, indent=2)
  table = results_table(out)
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(f"# {config.name}\n\n{table}")
  print(table)
  return out
