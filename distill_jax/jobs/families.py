"""The three-family comparison: CTC, attention and transducer students, each with and without KD.

`python -m launch.compare_families --config=configs/families.py --workdir=runs/families` runs
`run`, the main job (jobs/demo.py) widened to several student families:

1. The data, the n-gram LM, the converted teacher and its cache over the training split are
   made once (in WORKDIR) from the first family's config; every family must agree with it on
   the corpus, the teacher and the distillation settings the cache depends on (an error names
   the key otherwise).
2. Per family of `config.order` (`config.families.<name>`, a full experiment config such as
   configs/demo_attention.py's), in that order: the KD student in WORKDIR/<name>/kd and the
   control in WORKDIR/<name>/control (same steps, data and seed, no teacher), trained and evaluated
   by `demo.train_students`: WER/CER on `eval.splits` (greedy, and beam + LM for CTC when the
   config has an LM), real-time factor on one CPU.
3. WORKDIR/results.{md,json}: the teacher and one row per student, then the KD/control ratio
   of each family.

Every stage resumes or reuses finished work, as the main job does.
"""

from __future__ import annotations

import logging
import os
import time

import ml_collections

from distill_jax.jobs import demo
from distill_jax.train import runs

log = logging.getLogger(__name__)

# What the shared teacher cache and corpus depend on: every family must agree on these.
SHARED_KEYS = ("data.corpus_dir", "data.train", "data.test", "demo.teacher_hf",
               "distill.layer_mapping", "distill.layer_k", "distill.gamma")


def ordered_families(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
  """{name: config} of `config.order` (the families to run, in table order)."""
  unknown = [n for n in config.order if n not in config.families]
  if unknown:
    raise ValueError(f"config.order={tuple(config.order)} names {unknown}, not in "
                     f"config.families ({sorted(config.families)})")
  if not config.order:
    raise ValueError("config.order is empty: name at least one of config.families "
                     f"({sorted(config.families)})")
  return {n: config.families[n] for n in config.order}


def check_shared(families: dict[str, ml_collections.ConfigDict]) -> None:
  """Raises ValueError naming the family and key where a family's shared setting differs."""
  first, *rest = families.items()
  for name, cfg in rest:
    for key in SHARED_KEYS:
      want, got = runs.config_value(first[1], key), runs.config_value(cfg, key)
      if want != got:
        raise ValueError(f"config.families.{name}.{key}={got!r} differs from "
                         f"config.families.{first[0]}.{key}={want!r}: the families share one "
                         "corpus, teacher and teacher cache")


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains and evaluates every family's KD student and control; returns the results dict."""
  t0 = time.time()
  families = ordered_families(config)
  check_shared(families)
  base = next(iter(families.values()))
  if not base.demo.teacher_hf:
    raise ValueError("config.families.*.demo.teacher_hf is empty: the comparison distills a "
                     "teacher (configs/demo.py's is teachers/demo_hf)")
  os.makedirs(workdir, exist_ok=True)
  corpus = demo.prepare_data(base)
  demo.prepare_lm(base)
  teacher_dir = demo.prepare_teacher(base, workdir)
  cache_dir = demo.prepare_teacher_cache(base, teacher_dir, workdir)
  models = {"teacher": demo.teacher_row(base, teacher_dir)}
  ratios = {}
  for name, cfg in families.items():
    rows = demo.train_students(cfg, os.path.join(workdir, name), teacher_dir, cache_dir)
    ratios[name] = demo.kd_over_control(rows)
    for kind, row in rows.items():
      row["family"] = name
      models[f"{name} {'KD' if kind == 'kd' else kind}"] = row
  models["teacher"]["rtf"] = demo.measure_rtf(base, os.path.join(workdir, "teacher_rtf.json"),
                                              teacher_dir=teacher_dir)
  out = dict(name=config.name, corpus_train_hours=corpus["splits"]["train"]["hours"],
             rtf_threads=int(base.demo.rtf_threads), models=models, kd_over_control=ratios,
             wall_minutes=(time.time() - t0) / 60)
  demo.write_results(out, results_table(out), workdir)
  return out


def results_table(r: dict) -> str:
  """The main job's table (one row per model) and a line per family: KD over control."""
  ratios = r["kd_over_control"]
  lines = [demo.results_table({k: v for k, v in r.items() if k != "kd_over_control"})]
  lines.append("KD student's greedy test WER over its control's: " + ", ".join(
      f"{name} {ratio:.3f}" for name, ratio in ratios.items() if ratio is not None) + ".\n")
  return "\n".join(lines)
