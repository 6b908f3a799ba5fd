"""Synthetic read-speech corpus: public sentence lists spoken by three TTS engines.

`build_corpus(corpus_cfg, out_dir)` writes

  OUT/audio/<split>/<id>.flac        16 kHz mono 16-bit FLAC
  OUT/{train,dev,test}.jsonl         manifests (`manifest.write_manifest`: id, path, text,
                                     speaker, engine, duration)
  OUT/summary.json                   hours / utterances / voices / engines per split, rejected
                                     sentences by reason, failed utterances (deterministic)
  OUT/plan.jsonl                     every planned utterance with its TTS text, rate, pitch, seed
  OUT/rejected_sentences.jsonl       every sentence left out, with the reason
  OUT/failures.jsonl                 utterances whose synthesis failed (reason named)
  OUT/corpus_config.json             the resolved config, its fingerprint, the engine versions
  OUT/build_log.jsonl                one line per run: what was synthesized, wall time, speed

The pieces, one idea each:
  `corpus_spec`   the spec's keys (`DEFAULT_CORPUS`), validation, fingerprint;
  `sentences`     the vendored sentence lists, cleaned, evaluation transcripts left out;
  `corpus_plan`   sentence splits, voice hold-out, and which sentence / voice / rate / pitch /
                  level each utterance gets (keyed hashes: deterministic for a seed);
  `tts`           the engines behind one `synthesize` call;
  this module     synthesis of the plan's audio and the build of the folder above.
`DEFAULT_CORPUS`, `CorpusConfigError` and `language_model_text` are also reachable here.

Audio: engine output -> 16 kHz (soxr HQ) -> leading/trailing silence trimmed (frames 40 dB
below the loudest, 0.15 s kept) -> peak scaled to a level in `peak_dbfs_range` -> a seeded
Gaussian noise floor at `noise_floor_dbfs` (espeak-ng pauses are exact digital zeros, which no
microphone produces) -> 16-bit FLAC. An utterance longer than `max_seconds` is re-synthesized
once, faster; if still too long it fails.

Build. Every run re-derives the plan (a few seconds), checks `corpus_config.json` (a different
config in the same folder is an error naming the differing keys; `num_workers` is not part of
it), then synthesizes only the planned files that do not exist yet: each is written to a temp
file and renamed, so a killed run restarted finishes the rest, and a second run of a finished
corpus synthesizes nothing. Failures (engine error, empty or over-long audio) are appended to
`failures.jsonl`, listed in the summary and skipped by later runs unless `retry_failed=True`.
Work runs in a `spawn` multiprocessing pool (`num_workers`, 0 = all cores) with a tqdm bar;
with one worker it runs in-process.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import json
import logging
import multiprocessing
import os
import sys
import time
from typing import Any, Iterable, Mapping

import numpy as np
import soundfile as sf
import soxr

from distill_jax.data import corpus_plan
from distill_jax.data import corpus_spec
from distill_jax.data import manifest
from distill_jax.data import tts
from distill_jax.data.corpus_plan import Plan, PlannedUtterance

SAMPLE_RATE = 16000
SPLITS = corpus_spec.SPLITS
_TRIM_DB = 40.0
_MAX_RATE = 2.0

# Public names callers reach through this module (configs/corpus.py reads DEFAULT_CORPUS,
# launch/make_lm.py and the demo job call language_model_text).
DEFAULT_CORPUS = corpus_spec.DEFAULT_CORPUS
CorpusConfigError = corpus_spec.CorpusConfigError
language_model_text = corpus_plan.language_model_text


# ----------------------------------------------------------------------------------------------
# Audio.

def _trim_silence(audio: np.ndarray, sr: int) -> np.ndarray:
  """Cuts leading/trailing frames 40 dB below the loudest 10 ms frame, keeping 0.15 s."""
  hop = sr // 100
  n = len(audio) // hop
  if n < 3:
    return audio
  rms = np.sqrt(np.mean(audio[:n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1))
  loud = np.nonzero(rms > rms.max() * 10 ** (-_TRIM_DB / 20))[0]
  if loud.size == 0:
    return audio
  keep = int(corpus_spec.TRIM_KEEP_S * sr)
  start = max(0, loud[0] * hop - keep)
  end = min(len(audio), (loud[-1] + 1) * hop + keep)
  return audio[start:end]


def _to_pcm16(audio: np.ndarray, sr: int, peak_dbfs: float, trim: bool, noise_floor_dbfs: float,
              seed: int) -> np.ndarray:
  """Engine output -> 16 kHz, trimmed, peak-scaled, noise floor added, int16."""
  audio = np.asarray(audio, np.float32)
  if sr != SAMPLE_RATE:
    audio = soxr.resample(audio, sr, SAMPLE_RATE, quality="HQ").astype(np.float32)
  if trim:
    audio = _trim_silence(audio, SAMPLE_RATE)
  peak = float(np.max(np.abs(audio))) if audio.size else 0.0
  if peak < 1e-4:
    raise tts.TTSError("silent audio")
  audio = audio * (10 ** (peak_dbfs / 20) / peak)
  if noise_floor_dbfs > -120:  # no digital silence (espeak-ng pauses are exact zeros)
    noise = np.random.default_rng(seed).standard_normal(audio.shape, dtype=np.float32)
    audio = audio + noise * np.float32(10 ** (noise_floor_dbfs / 20))
  return np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)


def _write_flac_atomic(path: str, pcm: np.ndarray) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.{os.getpid()}.tmp"
  sf.write(tmp, pcm, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
  os.replace(tmp, path)


def synthesize_utterance(u: PlannedUtterance, out_dir: str, *, max_seconds: float,
                         trim: bool = True, noise_floor_dbfs: float = -75.0) -> dict[str, Any]:
  """Synthesizes and writes one planned utterance; never raises (failures are returned).

  Returns:
    {"id", "engine", "ok", "duration" (s), "tts_seconds" (engine wall time), "error"}.
  """
  result = {"id": u.id, "engine": u.engine, "speaker": u.speaker, "ok": False, "duration": 0.0,
            "tts_seconds": 0.0, "error": ""}
  try:
    voice = tts.voice_from_speaker(u.speaker)
    rate = u.rate
    for attempt in range(2):
      t0 = time.perf_counter()
      audio, sr = tts.synthesize(voice, u.tts_text, rate=rate, pitch=u.pitch, seed=u.seed)
      result["tts_seconds"] += time.perf_counter() - t0
      pcm = _to_pcm16(audio, sr, u.peak_dbfs, trim, noise_floor_dbfs, u.seed)
      duration = len(pcm) / SAMPLE_RATE
      if duration <= max_seconds:
        break
      if attempt == 1 or rate * duration / max_seconds * 1.05 > _MAX_RATE:
        raise tts.TTSError(f"audio of {duration:.1f} s exceeds max_seconds={max_seconds} "
                           f"(at rate {rate:.2f})")
      rate = rate * duration / max_seconds * 1.05
    if duration < corpus_spec.MIN_SECONDS:
      raise tts.TTSError(f"audio of {duration:.2f} s is shorter than {corpus_spec.MIN_SECONDS} s")
    _write_flac_atomic(os.path.join(out_dir, u.relpath), pcm)
    result.update(ok=True, duration=duration)
  except Exception as e:  # pylint: disable=broad-except
    # One bad utterance must not stop the build; it is reported in failures.jsonl / summary.
    result["error"] = f"{type(e).__name__}: {e}"
  return result


def _task(args: tuple[PlannedUtterance, str, dict[str, Any]]) -> dict[str, Any]:
  u, out_dir, options = args
  return synthesize_utterance(u, out_dir, **options)


def _run_tasks(tasks: list[tuple], num_workers: int, progress: bool) -> Iterable[dict[str, Any]]:
  """Yields results as they complete (in-process for one worker, else a spawn pool)."""
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  bar = tqdm(total=len(tasks), unit="utt", desc="synthesizing", disable=not progress or not tasks,
             smoothing=0.05, mininterval=0.1 if sys.stderr.isatty() else 10.0)
  try:
    if num_workers <= 1 or len(tasks) <= 1:
      for t in tasks:
        yield _task(t)
        bar.update()
      return
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold JAX threads
    chunk = max(1, min(8, len(tasks) // (num_workers * 8)))
    with ctx.Pool(num_workers) as pool:
      for r in pool.imap_unordered(_task, tasks, chunksize=chunk):
        yield r
        bar.update()
  finally:
    bar.close()


# ----------------------------------------------------------------------------------------------
# Build.

def _write_json(path: str, obj: Any) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=1, ensure_ascii=False)
    f.write("\n")
  os.replace(tmp, path)


def _write_jsonl(path: str, rows: Iterable[Mapping[str, Any]]) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    for row in rows:
      f.write(json.dumps(row, ensure_ascii=False) + "\n")
  os.replace(tmp, path)


def _read_failures(path: str) -> dict[str, dict[str, Any]]:
  """id -> failure record; a torn last line (killed run) is ignored."""
  out = {}
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      for line in f:
        try:
          row = json.loads(line)
        except json.JSONDecodeError:
          continue
        out[row["id"]] = row
  return out


def _clean_stale_tmp(out_dir: str) -> None:
  for path in glob.glob(os.path.join(out_dir, "audio", "*", "*.tmp")):
    os.remove(path)


def _check_or_write_config(out_dir: str, cfg: Mapping[str, Any]) -> None:
  """Raises `CorpusConfigError` if `out_dir` holds a corpus built from another config."""
  path = os.path.join(out_dir, "corpus_config.json")
  content = corpus_spec.content_config(cfg)
  versions = {e: tts.engine_version(e) for e in cfg["engines"]}
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      old = json.load(f)
    if old.get("fingerprint") != corpus_spec.fingerprint(cfg):
      diff = corpus_spec.config_diff(old.get("config", {}), content)
      raise CorpusConfigError(
          f"{out_dir} holds a corpus built with another config; differing keys: "
          f"{'; '.join(diff) or '(format)'}. Use another --out or delete that folder.")
    old_versions = old.get("engine_versions", {})
    changed = {e: (old_versions.get(e), v) for e, v in versions.items()
               if old_versions.get(e) not in (None, v)}
    if changed:
      logging.warning("TTS engine versions differ from the ones %s was started with: %s; "
                      "files synthesized now may not match a fresh build", out_dir, changed)
    return
  _write_json(path, {"fingerprint": corpus_spec.fingerprint(cfg), "config": content,
                     "engine_versions": versions})


def _audio_duration(path: str) -> float:
  info = sf.info(path)
  return info.frames / info.samplerate


def _describe_voices(speakers: Iterable[str]) -> dict[str, list[str]]:
  """engine -> voice names; espeak-ng as "<n> accents x <variants>" for brevity."""
  by_engine: dict[str, set[str]] = collections.defaultdict(set)
  for speaker in speakers:
    engine, _, name = speaker.partition("/")
    by_engine[engine].add(name)
  out = {}
  for engine, names in sorted(by_engine.items()):
    if engine == tts.ESPEAK:
      accents = sorted({n.partition("+")[0] for n in names})
      variants = sorted({n.partition("+")[2] for n in names})
      out[engine] = [f"{len(accents)} accents ({', '.join(accents)}) x {len(variants)} variants "
                     f"({', '.join(variants)})"]
    else:
      out[engine] = sorted(names)
  return out


def _summarize(plan: Plan, manifests: Mapping[str, list[manifest.Utterance]],
               failures: Mapping[str, Mapping[str, Any]], cfg: Mapping[str, Any]) -> dict:
  source_of = {u.id: u.source for us in plan.utterances.values() for u in us}
  splits = {}
  for split in SPLITS:
    utts = manifests[split]
    seconds = [u.duration for u in utts]
    splits[split] = {
        "utterances": len(utts),
        "planned": len(plan.utterances[split]),
        "sentences": len({u.text for u in utts}),
        "hours": round(sum(seconds) / 3600.0, 4),
        "mean_seconds": round(sum(seconds) / max(1, len(utts)), 2),
        "max_seconds": round(max(seconds, default=0.0), 2),
        "engines": dict(sorted(collections.Counter(u.engine for u in utts).items())),
        "sources": dict(sorted(collections.Counter(source_of[u.id] for u in utts).items())),
        "voices": _describe_voices(u.speaker for u in utts),
        "speakers": sorted({u.speaker for u in utts}),
    }
  reasons = collections.Counter(r["reason"] for r in plan.rejected)
  return {
      "fingerprint": corpus_spec.fingerprint(cfg),
      "sample_rate": SAMPLE_RATE,
      "splits": splits,
      "rejected_sentences": {"total": len(plan.rejected),
                             "by_reason": dict(sorted(reasons.items())),
                             "listed_in": "rejected_sentences.jsonl"},
      "failed_utterances": [dict(failures[k]) for k in sorted(failures)],
  }


def format_summary(summary: Mapping[str, Any]) -> str:
  """The summary as a plain-text table."""
  lines = [f"{'split':<6} {'utts':>6} {'hours':>7} {'mean s':>7} {'max s':>6} {'voices':>7}  "
           "engines"]
  for split in SPLITS:
    s = summary["splits"][split]
    engines = ", ".join(f"{e} {n}" for e, n in s["engines"].items())
    lines.append(f"{split:<6} {s['utterances']:>6} {s['hours']:>7.3f} {s['mean_seconds']:>7.2f} "
                 f"{s['max_seconds']:>6.2f} {len(s['speakers']):>7}  {engines}")
  for split in SPLITS:
    for engine, names in summary["splits"][split]["voices"].items():
      lines.append(f"  {split} {engine}: {', '.join(names)}")
  rej = summary["rejected_sentences"]
  lines.append(f"rejected sentences: {rej['total']} ("
               + ", ".join(f"{r}: {n}" for r, n in rej["by_reason"].items()) + ")")
  failed = summary["failed_utterances"]
  lines.append(f"failed utterances: {len(failed)}"
               + "".join(f"\n  {f['id']} {f['speaker']}: {f['error']}" for f in failed[:20])
               + ("\n  ..." if len(failed) > 20 else ""))
  return "\n".join(lines)


def build_corpus(corpus_cfg: Any, out_dir: str, *, retry_failed: bool = False,
                 progress: bool = True, verbose: bool = True) -> dict[str, Any]:
  """Builds (or finishes, or reuses) the synthetic corpus in `out_dir`.

  Args:
    corpus_cfg: the corpus spec (`config.data.corpus`; a ConfigDict or mapping whose keys are
      those of `DEFAULT_CORPUS`; absent keys take the defaults).
    out_dir: corpus folder (created).
    retry_failed: synthesize again utterances that failed in an earlier run.
    progress: show a tqdm progress bar.
    verbose: print the summary table.

  Returns:
    The summary (as in `summary.json`) plus a "run" entry: {"synthesized", "failed",
    "wall_seconds", "audio_seconds", "per_engine": {engine: {"utterances", "audio_seconds",
    "tts_seconds", "x_realtime_per_core"}}}.

  Raises:
    CorpusConfigError: invalid config, or `out_dir` built from a different config.
    tts.TTSError: an engine of `corpus_cfg.engines` is not installed.
  """
  t_start = time.perf_counter()
  cfg = corpus_spec.resolve_config(corpus_cfg)
  for engine in cfg["engines"]:
    tts.check_engine(engine)
  os.makedirs(out_dir, exist_ok=True)
  _check_or_write_config(out_dir, cfg)
  plan = corpus_plan.plan_corpus(cfg)
  all_utts = [u for split in SPLITS for u in plan.utterances[split]]
  _write_jsonl(os.path.join(out_dir, "plan.jsonl"),
               (dataclasses.asdict(u) | {"path": u.relpath} for u in all_utts))
  _write_jsonl(os.path.join(out_dir, "rejected_sentences.jsonl"), plan.rejected)

  failures_path = os.path.join(out_dir, "failures.jsonl")
  planned_ids = {u.id for u in all_utts}
  failures = {} if retry_failed else {
      k: v for k, v in _read_failures(failures_path).items() if k in planned_ids}
  _write_jsonl(failures_path, (failures[k] for k in sorted(failures)))
  _clean_stale_tmp(out_dir)

  todo = [u for u in all_utts
          if u.id not in failures and not os.path.exists(os.path.join(out_dir, u.relpath))]
  num_workers = int(cfg["num_workers"]) or os.cpu_count() or 1
  options = {"max_seconds": float(cfg["max_seconds"]), "trim": bool(cfg["trim_silence"]),
             "noise_floor_dbfs": float(cfg["noise_floor_dbfs"])}
  tasks = [(u, out_dir, options) for u in todo]
  per_engine = collections.defaultdict(lambda: collections.Counter())
  t_synth = time.perf_counter()
  with open(failures_path, "a", encoding="utf-8") as ff:
    for r in _run_tasks(tasks, min(num_workers, max(1, len(tasks))), progress):
      stats = per_engine[r["engine"]]
      stats["utterances"] += 1
      stats["audio_seconds"] += r["duration"]
      stats["tts_seconds"] += r["tts_seconds"]
      if not r["ok"]:
        record = {k: r[k] for k in ("id", "speaker", "error")}
        failures[r["id"]] = record
        ff.write(json.dumps(record) + "\n")
        ff.flush()
        logging.warning("synthesis failed for %s (%s): %s", r["id"], r["speaker"], r["error"])
  synth_wall = time.perf_counter() - t_synth

  manifests = {}
  for split in SPLITS:
    rows = []
    for u in plan.utterances[split]:
      path = os.path.join(out_dir, u.relpath)
      if u.id in failures or not os.path.exists(path):
        continue
      rows.append(manifest.Utterance(id=u.id, path=os.path.abspath(path), text=u.text,
                                     speaker=u.speaker, engine=u.engine,
                                     duration=round(_audio_duration(path), 4)))
    manifest.write_manifest(os.path.join(out_dir, f"{split}.jsonl"), rows)
    manifests[split] = rows
  summary = _summarize(plan, manifests, failures, cfg)
  _write_json(os.path.join(out_dir, "summary.json"), summary)

  run = {
      "synthesized": len(todo),
      "failed": sum(1 for u in todo if u.id in failures),
      "workers": num_workers,
      "synthesis_wall_seconds": round(synth_wall, 2),
      "wall_seconds": round(time.perf_counter() - t_start, 2),
      "audio_seconds": round(sum(s["audio_seconds"] for s in per_engine.values()), 2),
      "per_engine": {
          e: {"utterances": s["utterances"], "audio_seconds": round(s["audio_seconds"], 2),
              "tts_seconds": round(s["tts_seconds"], 2),
              "x_realtime_per_core": round(s["audio_seconds"] / max(s["tts_seconds"], 1e-9), 1)}
          for e, s in sorted(per_engine.items())},
  }
  with open(os.path.join(out_dir, "build_log.jsonl"), "a", encoding="utf-8") as f:
    f.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **run}) + "\n")
  if verbose:
    print(format_summary(summary))
    if todo:
      speed = run["audio_seconds"] / max(synth_wall, 1e-9)
      print(f"synthesized {len(todo)} utterances ({run['audio_seconds'] / 3600:.3f} h) in "
            f"{synth_wall:.1f} s with {num_workers} worker(s): {speed:.1f} audio s per wall s")
    else:
      print(f"{out_dir}: corpus complete, nothing to synthesize")
  return {**summary, "run": run}
