"""The main job on the embedded default: corpus -> teacher -> students -> evaluation -> table.

Every stage is cached, so a second run redoes none of the finished work:
1. Data: the synthetic corpus (`synthetic.build_corpus` is a no-op when it exists), the
   real-English manifest, and the word n-gram LM on the corpus's training text.
2. Teacher (`config.demo.teacher_hf` set): the demo teacher's Hugging Face folder is converted
   exactly as a user converts a hub checkpoint (`convert.hf_wav2vec2.convert`) into
   WORKDIR/teacher, then (`config.demo.teacher_cache`) run once over the training split into
   WORKDIR/teacher_cache, which the distillation step reads.
3. Students: the distilled student in WORKDIR/kd and (`config.demo.control`) the same student
   trained without the teacher for the same steps, data and seed in WORKDIR/control. Without a
   teacher, one student in WORKDIR/student. Training resumes from (or ends at) each folder's last
   checkpoint.
4. Evaluation of every model, teacher included, on `config.eval.splits`: greedy, and beam search
   + the n-gram LM when `config.eval.lm` is set; the real-time factor on
   `config.demo.rtf_threads` CPUs, measured by `launch/rtf.py` in a pinned subprocess.
5. WORKDIR/results.{md,json}: one row per model.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from typing import Any

import ml_collections

from distill_jax.convert import hf_wav2vec2, teacher_folder, whisper_ctc_folder
from distill_jax.data import local, synthetic
from distill_jax.decode import ngram
from distill_jax.jobs import evaluate
from distill_jax.train import loop, metrics, splits, state
from distill_jax.train import teacher as teacher_lib
from distill_jax.train import teacher_cache

# The repository root: `launch.rtf` runs from there (distill_jax/jobs/demo.py -> three levels).
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

log = logging.getLogger(__name__)


def prepare_data(config: ml_collections.ConfigDict) -> dict:
  """Builds (or reuses) the synthetic corpus and the real-English manifest."""
  summary = synthetic.build_corpus(config.data.corpus, config.data.corpus_dir)
  missing = [f for f in config.data.real_english_folders if not os.path.isdir(f)]
  if missing:
    raise FileNotFoundError(f"config.data.real_english_folders: {missing} not found (the real "
                            "English clips are in the repository under data/real_english/)")
  if config.data.real_english_folders:
    local.manifest_from_folders(list(config.data.real_english_folders),
                                config.data.real_english)
  return summary


def prepare_lm(config: ml_collections.ConfigDict) -> str | None:
  """Builds the word n-gram LM `config.eval.lm` from the corpus training text if missing."""
  path = config.eval.lm
  if path and not os.path.exists(path):
    lm = ngram.build_arpa(synthetic.language_model_text(config.data.corpus), path,
                          order=config.eval.lm_order)
    log.info("built %d-gram LM %s (%d words)", config.eval.lm_order, path, len(lm.vocabulary))
  return path or None


def prepare_teacher(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Converts `config.demo.teacher_hf` into WORKDIR/teacher once; returns that folder.

  A folder converted earlier is reused when it was made from the same weights (sha256 of the
  source weight files); otherwise it is an error naming both, rather than a silent mix. A
  Whisper CTC-head folder (`launch.export_teacher` of configs/whisper_head.py) needs no
  conversion: it is returned as it is.
  """
  source = config.demo.teacher_hf
  if not os.path.isdir(source):
    raise FileNotFoundError(
        f"config.demo.teacher_hf={source!r} is not a folder: the demo teacher is a Hugging Face "
        "folder in the repository (configs/demo_teacher.py says how it is made); set "
        "--config.demo.teacher_hf='' to train the student alone")
  if whisper_ctc_folder.is_folder(source):
    log.info("teacher: the Whisper CTC-head folder %s, used as it is", source)
    return source
  out = os.path.join(workdir, "teacher")
  meta_path = os.path.join(out, hf_wav2vec2.TEACHER_META)
  sha = hf_wav2vec2.weights_sha256(source)
  if os.path.exists(meta_path):
    with open(meta_path) as f:
      old = json.load(f)["source_sha256"]
    if old != sha:
      raise ValueError(f"{out} was converted from other weights (sha256 {old[:12]}...) than "
                       f"{source} ({sha[:12]}...); use a new --workdir or delete {out}")
    log.info("teacher: reusing %s (converted from %s)", out, source)
    return out
  t0 = time.time()
  meta = hf_wav2vec2.convert(source, out)
  log.info("teacher: converted %s -> %s (%s params) in %.1f s", source, out,
           f"{meta['num_params']:,}", time.time() - t0)
  return out


def prepare_teacher_cache(config: ml_collections.ConfigDict, teacher_dir: str,
                          workdir: str) -> str:
  """Runs the teacher once over the training split into WORKDIR/teacher_cache (completes a
  partial cache; a finished one is checked and reused)."""
  kd_config = _with(config, {"distill.teacher": teacher_dir, "distill.cache": ""})
  tokenizer = splits.load_tokenizer(kd_config)
  teacher = teacher_lib.load_teacher(kd_config, tokenizer)
  dataset, _ = splits.load_split(kd_config, config.data.train, "train", tokenizer)
  out = os.path.join(workdir, "teacher_cache")
  stats = teacher_cache.build_cache(teacher.teacher, dataset, out,
                                    layers=teacher.layers, tokenizer=tokenizer,
                                    teacher_path=teacher.path, manifest_path=config.data.train,
                                    progress=config.progress)
  log.info("teacher cache %s: %d shards written, %d reused, %.1f s", out,
           stats["shards_written"], stats["shards_skipped"], stats["seconds"])
  return out


def _with(config: ml_collections.ConfigDict, changes: dict[str, Any]) -> ml_collections.ConfigDict:
  """A copy of the (locked) config with dotted keys changed; unknown keys are errors."""
  out = config.copy_and_resolve_references()
  for dotted, value in changes.items():
    *parents, key = dotted.split(".")
    node = out
    for p in parents:
      node = node[p]
    if key not in node:
      raise KeyError(f"config has no key {dotted!r}")
    node[key] = value
  return out


def plan_students(config: ml_collections.ConfigDict, workdir: str,
                  teacher_dir: str | None, cache_dir: str | None) -> dict[str, tuple]:
  """{name: (config, workdir)} of the students the job trains, in training order."""
  if not teacher_dir:
    return {"student": (config, os.path.join(workdir, "student"))}
  plan = {"kd": (_with(config, {"distill.teacher": teacher_dir,
                                "distill.cache": cache_dir or ""}),
                 os.path.join(workdir, "kd"))}
  if config.demo.control:
    plan["control"] = (_with(config, {"distill.teacher": "", "distill.cache": ""}),
                       os.path.join(workdir, "control"))
  return plan


def _decoders(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
  out = {"greedy": _with(config, {"eval.decoder": "greedy"})}
  if config.eval.lm:
    out[f"beam {config.eval.beam_size} + {config.eval.lm_order}-gram LM"] = _with(
        config, {"eval.decoder": "beam_lm"})
  return out


def measure_rtf(config: ml_collections.ConfigDict, out_json: str, *, workdir: str | None = None,
                teacher_dir: str | None = None) -> dict | None:
  """Real-time factor on `config.demo.rtf_threads` CPUs (0: not measured), in a subprocess
  (`launch/rtf.py`) so that the CPU pinning does not touch this process's JAX."""
  threads = int(config.demo.rtf_threads)
  if not threads:
    return None
  config_json = out_json + ".config.json"
  with open(config_json, "w") as f:
    f.write(config.to_json())
  cmd = [sys.executable, "-m", "launch.rtf", f"--config_json={config_json}",
         f"--threads={threads}", f"--out={out_json}", f"--split={config.demo.rtf_split}"]
  cmd += [f"--teacher={teacher_dir}"] if teacher_dir else [f"--workdir={workdir}"]
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                        cwd=REPO)
  if proc.returncode:
    raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
  with open(out_json) as f:
    return json.load(f)


def _median_throughput(workdir: str) -> float:
  rows = metrics.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  aps = sorted(r["train/audio_sec_per_sec"] for r in rows if "train/audio_sec_per_sec" in r)
  return aps[len(aps) // 2] if aps else 0.0


def results_table(r: dict) -> str:
  """Markdown: one row per model; WER / CER per split and decoder; RTF; training figures."""
  evals = [(split, dec) for m in r["models"].values() for dec, res in m["eval"].items()
           for split in res]
  evals = list(dict.fromkeys(evals))
  head = (["model", "parameters", "steps", "train min", "audio s/s"]
          + [f"{split} WER / CER, {dec}" for split, dec in evals]
          + [f"RTF ({r['rtf_threads']} CPU)"])
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for name, m in r["models"].items():
    cells = [name, f"{m['num_params']:,}", str(m.get("steps", "")),
             f"{m['train_minutes']:.1f}" if "train_minutes" in m else "",
             f"{m['audio_sec_per_sec']:.0f}" if "audio_sec_per_sec" in m else ""]
    for split, dec in evals:
      res = m["eval"].get(dec, {}).get(split)
      cells.append(f"{100 * res['wer']:.1f}% / {100 * res['cer']:.1f}%" if res else "")
    cells.append(f"{m['rtf']['rtf']:.4f}" if m.get("rtf") else "")
    lines.append("| " + " | ".join(cells) + " |")
  engines = sorted({e for m in r["models"].values()
                    for e in m["eval"].get("greedy", {}).get("test", {}).get("by_engine", {})})
  if engines:  # which held-out voices carry over
    lines += ["", "| test WER by engine (greedy) | " + " | ".join(engines) + " |",
              "|" + "---|" * (len(engines) + 1)]
    for name, m in r["models"].items():
      by = m["eval"].get("greedy", {}).get("test", {}).get("by_engine", {})
      lines.append(f"| {name} | " + " | ".join(
          f"{100 * by[e]['wer']:.1f}%" if e in by else "" for e in engines) + " |")
  lines += ["", f"Corpus: {r['corpus_train_hours']:.2f} h of training speech. Whole job: "
            f"{r['wall_minutes']:.1f} min."]
  if "kd_over_control" in r:
    lines.append("KD student's test WER over the control's (greedy): "
                 f"{r['kd_over_control']:.3f}.")
  return "\n".join(lines) + "\n"


def teacher_row(config: ml_collections.ConfigDict, teacher_dir: str) -> dict:
  """The teacher's results row: parameters and WER/CER on every split with every decoder."""
  teacher, _ = teacher_folder.load_folder(teacher_dir)
  return dict(num_params=state.count_params(teacher.params), path=teacher_dir, eval={
      dec: evaluate.evaluate_teacher(teacher_dir, config=cfg)
      for dec, cfg in _decoders(config).items()})


def train_students(config: ml_collections.ConfigDict, workdir: str, teacher_dir: str | None,
                   cache_dir: str | None) -> dict[str, dict]:
  """Trains and evaluates `plan_students`' models in order; {name: results row}.

  The control stops at the KD student's last step, whatever stopped that one (its wall cap).
  """
  models, stop_at = {}, 0
  for name, (cfg, run_dir) in plan_students(config, workdir, teacher_dir, cache_dir).items():
    if name == "control" and stop_at:
      cfg = _with(cfg, {"train.stop_at_step": stop_at, "train.max_wall_minutes": 0.0})
    log.info("training %s in %s", name, run_dir)
    summary = loop.train_and_evaluate(cfg, run_dir)
    stop_at = stop_at or summary["step"]
    models[name] = dict(num_params=summary["num_params"], steps=summary["step"],
                        train_minutes=summary["wall_minutes"],
                        audio_sec_per_sec=_median_throughput(run_dir), path=run_dir, eval={
                            dec: evaluate.evaluate_run(run_dir, "best", config=c)
                            for dec, c in _decoders(cfg).items()})
    models[name]["rtf"] = measure_rtf(cfg, os.path.join(run_dir, "rtf.json"), workdir=run_dir)
  return models


def kd_over_control(models: dict[str, dict], kd: str = "kd", control: str = "control"):
  """The KD student's greedy test WER over the control's, or None without both."""
  try:
    kd_wer = models[kd]["eval"]["greedy"]["test"]["wer"]
    return kd_wer / max(models[control]["eval"]["greedy"]["test"]["wer"], 1e-9)
  except KeyError:
    return None


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  t0 = time.time()
  os.makedirs(workdir, exist_ok=True)
  corpus = prepare_data(config)
  prepare_lm(config)
  models: dict[str, dict] = {}

  teacher_dir = cache_dir = None
  if config.demo.teacher_hf:
    teacher_dir = prepare_teacher(config, workdir)
    if config.demo.teacher_cache:
      cache_dir = prepare_teacher_cache(config, teacher_dir, workdir)
    models["teacher"] = teacher_row(config, teacher_dir)
  models.update(train_students(config, workdir, teacher_dir, cache_dir))
  if teacher_dir:
    models["teacher"]["rtf"] = measure_rtf(config, os.path.join(workdir, "teacher_rtf.json"),
                                           teacher_dir=teacher_dir)

  out = dict(name=config.name, corpus_train_hours=corpus["splits"]["train"]["hours"],
             rtf_threads=int(config.demo.rtf_threads), models=models,
             wall_minutes=(time.time() - t0) / 60)
  ratio = kd_over_control(models)
  if ratio is not None:
    out["kd_over_control"] = ratio
  write_results(out, results_table(out), workdir)
  return out


def write_results(out: dict, table: str, workdir: str) -> None:
  """WORKDIR/results.json (`out`) and WORKDIR/results.md (`table` under out['name']); prints
  the table."""
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(out, f, indent=2)
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(f"# {out['name']}\n\n{table}")
  print(table)
