r"""All denoisers on the same seeded test mixtures, in one run (issue 27).

  nice -n 19 python -m benchmarks.enhance_compare --per_snr=20 \
      --run=recon=/work/runs/enh_recon --run=gan=/work/runs/enh_gan@20000 \
      --anchors=rnnoise,dfn3,gtcrn,noisereduce --save_audio=2 --out=runs/enh_compare

Mixtures: `enhance.evaluate.dev_set(seed, cleans, noises, snrs, per_snr, length, level)` with
clean speech from --clean (a manifest; default the speechocean762 test speakers) and noise from
--noise (a list; default the test noises), so every system sees the same audio. Clip ids are
'snr{v}_{i}' (mixture i at SNR v).

Systems: `noisy` (identity), ours from `--run=NAME=WORKDIR[@STEP]` (generator params restored
from WORKDIR's Orbax checkpoint, config from WORKDIR/config.json; STEP 'latest' by default, or
'best', a number, 'avg:K'), and the anchors of benchmarks/enhance_anchors.py.

Metrics per clip: PESQ-WB, STOI, ESTOI, SI-SDR (distill_jax/enhance/metrics.py); on the first
--heavy_per_snr clips of each SNR also DNSMOS SIG/BAK/OVRL (speechmos, non-personalized; it
loops clips shorter than 9 s) and HASPI v2 (pyclarity) for three audiograms from
clarity.utils.audiogram: 'normal' (0 dB HL), 'mild' (AUDIOGRAM_MILD, 5-50 dB HL sloping) and
'moderate' (AUDIOGRAM_MODERATE, Bisgaard N2, 15-65 dB HL), unaided (no NAL-R gain). HASPI's
level: both signals are scaled by the gain that brings the clean reference to RMS 1 and
level1 = 65 dB SPL, i.e. the clean speech is presented at 65 dB SPL and the processed signal at
its level relative to it. A clip whose enhancement or metric fails (exception, NaN/Inf output)
is counted in 'failed' and listed by id in results.json; the means are over the others.

Cost per system: parameters, MAC/s (ours: `model.count_macs_per_frame` x frames per second;
anchors: published figures, enhance_anchors.ANCHORS) and the real-time factor measured here
(wall time of enhancing all clips / audio seconds, after one warm-up clip). Run as a command,
the process is pinned to one CPU (sched_setaffinity) and the thread variables below are set to
1 before numpy/JAX load; equivalently `taskset -c 0 env OMP_NUM_THREADS=1 ... python -m ...`.
On a machine shared with a training run the RTF is an upper bound.

Outputs in --out: results.json (flags, systems, per-SNR and overall means, per-clip scores,
failures), table.md (one row per system per SNR, then the cost table) and, with
--save_audio=K, audio/<clip>/{clean,noisy,<system>}.wav (16-bit) for the first K clips per SNR
plus audio/index.json (files and per-clip metrics) for the listening page.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # one thread for the RTF column; must precede numpy / JAX
  for _k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_k, "1")
  os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                        "intra_op_parallelism_threads=1")

import dataclasses
import json
import time
from typing import Any, Callable, Sequence

from absl import app, flags
import numpy as np
import soundfile as sf

from benchmarks import enhance_anchors
from distill_jax.enhance import evaluate as evaluate_lib
from distill_jax.enhance import metrics as metrics_lib

RATE = 16000
LIGHT = ("pesq", "stoi", "estoi", "sisdr")
DNSMOS = ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl")
AUDIOGRAMS = ("normal", "mild", "moderate")
HASPI_LEVEL_DB_SPL = 65.0

_CLEAN = flags.DEFINE_string("clean", "datasets/speechocean762/test.jsonl",
                             "Manifest of clean test speech (paths relative to the repo).")
_NOISE = flags.DEFINE_string("noise", "datasets/noise/test.txt", "List (or folder) of test noises.")
_SNRS = flags.DEFINE_list("snrs", ["-5", "0", "5", "10", "15"], "Test SNRs (dB).")
_PER_SNR = flags.DEFINE_integer("per_snr", 20, "Mixtures per SNR.")
_SECONDS = flags.DEFINE_float("seconds", 4.0, "Mixture length (s).")
_SEED = flags.DEFINE_integer("seed", 1234, "Mixture seed (configs/enhance.py dev_seed).")
_LEVEL = flags.DEFINE_enum("level", "active", ["active", "rms"], "Speech level for the SNR.")
_RUN = flags.DEFINE_multi_string("run", [], "NAME=WORKDIR[@STEP]: a denoiser run of ours.")
_ANCHORS = flags.DEFINE_list("anchors", ["rnnoise", "dfn3", "noisereduce"],
                             f"Anchors among {sorted(enhance_anchors.ANCHORS)}.")
_HEAVY = flags.DEFINE_integer("heavy_per_snr", 4, "Clips per SNR scored with DNSMOS and HASPI.")
_AUDIOGRAMS = flags.DEFINE_list("audiograms", list(AUDIOGRAMS), f"HASPI audiograms {AUDIOGRAMS}.")
_SAVE = flags.DEFINE_integer("save_audio", 0, "Clips per SNR saved as WAVs (0: none).")
_OUT = flags.DEFINE_string("out", "runs/enh_compare", "Output folder.")


@dataclasses.dataclass
class System:
  name: str
  fn: Callable[[np.ndarray], np.ndarray]  # noisy [S] -> enhanced [S], 16 kHz
  params: float | None = None
  macs_per_second: float | None = None
  latency_ms: float | None = None
  source: str = ""


def noisy_system() -> System:
  return System("noisy", lambda x: np.asarray(x, np.float32), 0, 0, 0.0, "identity")


def anchor_system(name: str) -> System:
  info = enhance_anchors.ANCHORS.get(name)
  if info is None:
    raise ValueError(f"--anchors: {name!r} is not one of {sorted(enhance_anchors.ANCHORS)}")
  return System(name, enhance_anchors.build(name), info.params, info.macs_per_second,
                info.latency_ms, f"{info.package}; figures: {info.source}")


def ours_system(name: str, model, params, source: str = "") -> System:
  """A Denoiser and its params as a System (whole-utterance `model.enhance`, jitted; the input
  is zero-padded to a multiple of the hop and the output cropped back)."""
  import jax
  import jax.numpy as jnp
  from distill_jax.enhance import model as model_lib
  hop = model.frame.hop
  fwd = jax.jit(lambda p, x: model_lib.enhance(model, p, x))

  def fn(x: np.ndarray) -> np.ndarray:
    s = x.shape[0]
    xp = np.pad(np.asarray(x, np.float32), (0, -s % hop))
    return np.asarray(fwd(params, jnp.asarray(xp[None])))[0, :s]

  n = sum(int(np.size(v)) for v in jax.tree_util.tree_leaves(params))
  macs = model_lib.count_macs_per_frame(model)["total"] * model.frame.sample_rate / hop
  return System(name, fn, n, float(macs), float(model.frame.latency_ms), source)


def parse_run(spec: str) -> tuple[str, str, str]:
  """'NAME=WORKDIR[@STEP]' -> (name, workdir, step); step 'latest' when absent."""
  name, sep, rest = spec.partition("=")
  if not sep or not name or not rest:
    raise ValueError(f"--run={spec!r}: expected NAME=WORKDIR[@STEP]")
  workdir, _, step = rest.partition("@")
  return name, workdir, step or "latest"


def load_run(spec: str) -> System:
  """The generator of a launch/train_enhance.py run (`enhance/inference.load_run`)."""
  from distill_jax.enhance import inference
  name, workdir, step = parse_run(spec)
  model, params, _ = inference.load_run(workdir, int(step) if step.isdigit() else step)
  return ours_system(name, model, params, f"{workdir}@{step}")


def _audiogram(name: str):
  from clarity.utils import audiogram as ag
  table = dict(normal=ag.AUDIOGRAM_REF, mild=ag.AUDIOGRAM_MILD, moderate=ag.AUDIOGRAM_MODERATE)
  if name not in table:
    raise ValueError(f"--audiograms: {name!r} is not one of {AUDIOGRAMS}")
  return table[name]


def haspi(clean: np.ndarray, est: np.ndarray, audiogram: str) -> float:
  """HASPI v2 (unaided) with the clean reference presented at 65 dB SPL (see the docstring)."""
  from clarity.evaluator.haspi import haspi_v2
  c, y = np.asarray(clean, np.float64), np.asarray(est, np.float64)
  rms = float(np.sqrt(np.mean(c ** 2)))
  if rms == 0.0:
    raise ValueError("haspi: the clean reference is silent")
  score, _ = haspi_v2(c / rms, RATE, y / rms, RATE, _audiogram(audiogram),
                      level1=HASPI_LEVEL_DB_SPL)
  return float(score)


def dnsmos(est: np.ndarray) -> dict[str, float]:
  from speechmos import dnsmos as dnsmos_lib
  y = np.asarray(est, np.float64)
  if np.max(np.abs(y)) > 1.0:
    raise ValueError(f"dnsmos: the signal peaks at {np.max(np.abs(y)):.3f} > 1 (speechmos "
                     "refuses it)")
  r = dnsmos_lib.run(y, sr=RATE)
  return dict(dnsmos_sig=float(r["sig_mos"]), dnsmos_bak=float(r["bak_mos"]),
              dnsmos_ovrl=float(r["ovrl_mos"]))


def clip_metrics(clean: np.ndarray, est: np.ndarray, heavy: bool,
                 audiograms: Sequence[str]) -> dict[str, float]:
  m = dict(pesq=metrics_lib.pesq_wb(clean, est, RATE), stoi=metrics_lib.stoi(clean, est, RATE),
           estoi=metrics_lib.estoi(clean, est, RATE), sisdr=metrics_lib.si_sdr(clean, est))
  if heavy:
    m.update(dnsmos(est))
    for a in audiograms:
      m[f"haspi_{a}"] = haspi(clean, est, a)
  return m


def build_sets(clean_path: str, noise_path: str, snrs: Sequence[float], per_snr: int,
               seconds: float, seed: int, level: str) -> dict[float, dict[str, np.ndarray]]:
  from distill_jax.enhance import loop as loop_lib
  cleans = loop_lib.load_clean(clean_path, RATE)
  noises = loop_lib.load_noise(noise_path, RATE)
  return evaluate_lib.dev_set(seed, cleans, noises, snrs, per_snr, int(round(seconds * RATE)),
                              level)


def _wav(path: str, x: np.ndarray) -> None:
  sf.write(path, np.clip(np.asarray(x, np.float64), -1.0, 1.0), RATE, subtype="PCM_16")


def compare(systems: Sequence[System], sets: dict[float, dict[str, np.ndarray]], out: str,
            heavy_per_snr: int = 4, audiograms: Sequence[str] = AUDIOGRAMS,
            save_audio: int = 0, progress: bool = True, meta: dict | None = None) -> dict:
  """Runs every system on every clip of `sets` ({snr: {'clean', 'noisy': [n, S]}}), scores
  them, writes results.json / table.md (and audio) to `out` and returns the results."""
  from tqdm import tqdm
  os.makedirs(out, exist_ok=True)
  names = [s.name for s in systems]
  if len(set(names)) != len(names):
    raise ValueError(f"system names must be unique, got {names}")
  clips = [(f"snr{snr:g}_{i}", snr, i) for snr, b in sets.items() for i in range(len(b["noisy"]))]
  total_s = sum(b["noisy"].shape[1] for b in sets.values() for _ in b["noisy"]) / RATE
  scores: dict[str, dict[str, dict]] = {s.name: {} for s in systems}
  failures: list[dict] = []
  audio_index: list[dict] = []
  rtf = {}
  bar = tqdm(total=len(systems) * len(clips), disable=not progress, desc="enhance+score",
             unit="clip")
  saved = {cid for cid, snr, i in clips if i < save_audio}
  for cid in sorted(saved):
    os.makedirs(os.path.join(out, "audio", cid), exist_ok=True)
  for cid, snr, i in clips:
    if cid in saved:
      _wav(os.path.join(out, "audio", cid, "clean.wav"), sets[snr]["clean"][i])
  for system in systems:
    bar.set_postfix(system=system.name)
    first = clips[0]
    try:  # warm-up (JIT compilation, session creation) outside the timing
      system.fn(sets[first[1]]["noisy"][first[2]])
    except Exception:  # pylint: disable=broad-except
      pass  # the same clip fails again below and is recorded there
    spent = 0.0
    for cid, snr, i in clips:
      clean, noisy = sets[snr]["clean"][i], sets[snr]["noisy"][i]
      stage = "enhance"
      try:
        t0 = time.perf_counter()
        est = np.asarray(system.fn(noisy), np.float32)
        spent += time.perf_counter() - t0
        if est.shape != noisy.shape:
          raise ValueError(f"output shape {est.shape} != input {noisy.shape}")
        if not np.all(np.isfinite(est)):
          raise FloatingPointError("NaN or Inf in the output")
        stage = "metrics"
        scores[system.name][cid] = dict(snr=snr, **clip_metrics(clean, est, i < heavy_per_snr,
                                                                 audiograms))
        if cid in saved:
          _wav(os.path.join(out, "audio", cid, f"{system.name}.wav"), est)
      except Exception as e:  # pylint: disable=broad-except
        failures.append(dict(system=system.name, clip=cid, stage=stage,
                             error=f"{type(e).__name__}: {e}"))
      bar.update(1)
    rtf[system.name] = spent / total_s
  bar.close()
  results = _summarize(systems, sets, scores, failures, rtf, audiograms)
  results["meta"] = dict(meta or {}, heavy_per_snr=heavy_per_snr, audiograms=list(audiograms),
                         haspi_level_db_spl=HASPI_LEVEL_DB_SPL, audio_seconds=total_s)
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
  with open(os.path.join(out, "table.md"), "w") as f:
    f.write(table_md(results))
  if saved:
    for cid, snr, i in clips:
      if cid in saved:
        audio_index.append(dict(
            id=cid, snr=snr, clean=f"{cid}/clean.wav",
            systems={n: dict(file=f"{cid}/{n}.wav", metrics=scores[n].get(cid))
                     for n in names if cid in scores[n]}))
    with open(os.path.join(out, "audio", "index.json"), "w") as f:
      json.dump(audio_index, f, indent=2)
  return results


def _summarize(systems, sets, scores, failures, rtf, audiograms) -> dict:
  keys = LIGHT + DNSMOS + tuple(f"haspi_{a}" for a in audiograms)
  per_snr: dict[str, dict] = {}
  for s in systems:
    rows = {}
    groups = [(f"{snr:g}", [v for v in scores[s.name].values() if v["snr"] == snr],
               len(sets[snr]["noisy"])) for snr in sets]
    n_all = sum(len(b["noisy"]) for b in sets.values())
    groups.append(("all", list(scores[s.name].values()), n_all))
    for label, vals, n_total in groups:
      row = dict(n=len(vals), failed=n_total - len(vals))
      for k in keys:
        xs = [v[k] for v in vals if k in v]
        row[k] = float(np.mean(xs)) if xs else None
        if k in DNSMOS or k.startswith("haspi"):
          row[f"n_{k}"] = len(xs)
      rows[label] = row
    per_snr[s.name] = rows
  noisy_si = scores.get("noisy", {})
  for name, rows in per_snr.items():  # SI-SDR improvement over noisy on the same clips
    for label in rows:
      pairs = [(v["sisdr"], noisy_si[c]["sisdr"]) for c, v in scores[name].items()
               if c in noisy_si and (label == "all" or f"{v['snr']:g}" == label)]
      rows[label]["sisdr_i"] = float(np.mean([a - b for a, b in pairs])) if pairs else None
  cost = {s.name: dict(params=s.params, macs_per_second=s.macs_per_second,
                       latency_ms=s.latency_ms, rtf_1thread=rtf.get(s.name), source=s.source)
          for s in systems}
  return dict(systems=[s.name for s in systems], snrs=[f"{snr:g}" for snr in sets],
              metrics=per_snr, cost=cost, failures=failures, clips=scores)


def _fmt(v, nd=2) -> str:
  return "n/a" if v is None else f"{v:.{nd}f}"


def table_md(results: dict) -> str:
  """Markdown: one row per system per SNR (and 'all'), then the cost table."""
  hk = [k for k in next(iter(results["metrics"].values()))["all"] if k.startswith("haspi_")]
  head = (["system", "SNR", "n", "failed", "PESQ-WB", "STOI", "ESTOI", "SI-SDR", "SI-SDRi",
           "DNSMOS SIG", "BAK", "OVRL"] + [f"HASPI {k[6:]}" for k in hk])
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for label in results["snrs"] + ["all"]:
    for name in results["systems"]:
      r = results["metrics"][name][label]
      cells = [name, label, str(r["n"]), str(r["failed"]), _fmt(r["pesq"]), _fmt(r["stoi"], 3),
               _fmt(r["estoi"], 3), _fmt(r["sisdr"]), _fmt(r["sisdr_i"]),
               _fmt(r["dnsmos_sig"]), _fmt(r["dnsmos_bak"]), _fmt(r["dnsmos_ovrl"])]
      cells += [_fmt(r[k], 3) for k in hk]
      lines.append("| " + " | ".join(cells) + " |")
  n_heavy = {r["all"].get("n_dnsmos_ovrl") for r in results["metrics"].values()}
  lines += ["", f"DNSMOS and HASPI on {sorted(x for x in n_heavy if x is not None)} clips per "
            "system (the first --heavy_per_snr of each SNR); HASPI unaided, clean at 65 dB SPL.",
            "", "| system | params | MMAC/s | latency (ms) | RTF (1 thread, measured) | source |",
            "|---|---|---|---|---|---|"]
  for name in results["systems"]:
    c = results["cost"][name]
    p = "n/a" if c["params"] is None else f"{c['params']:,.0f}"
    mm = None if c["macs_per_second"] is None else c["macs_per_second"] / 1e6
    lat = "offline" if c["latency_ms"] is None else f"{c['latency_ms']:.2f}"
    lines.append(f"| {name} | {p} | {_fmt(mm, 1)} | {lat} | {_fmt(c['rtf_1thread'], 4)} | "
                 f"{c['source']} |")
  if results["failures"]:
    lines += ["", f"{len(results['failures'])} failed clip(s):"]
    lines += [f"- {f['system']} {f['clip']} ({f['stage']}): {f['error']}"
              for f in results["failures"]]
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
  snrs = [float(s) for s in _SNRS.value]
  systems = [noisy_system()]
  systems += [load_run(spec) for spec in _RUN.value]
  systems += [anchor_system(a) for a in _ANCHORS.value if a]
  for a in _AUDIOGRAMS.value:
    if a not in AUDIOGRAMS:
      raise ValueError(f"--audiograms: {a!r} is not one of {AUDIOGRAMS}")
  sets = build_sets(_CLEAN.value, _NOISE.value, snrs, _PER_SNR.value, _SECONDS.value,
                    _SEED.value, _LEVEL.value)
  meta = dict(clean=_CLEAN.value, noise=_NOISE.value, snrs=snrs, per_snr=_PER_SNR.value,
              seconds=_SECONDS.value, seed=_SEED.value, level=_LEVEL.value, runs=_RUN.value,
              anchors=_ANCHORS.value, affinity=sorted(os.sched_getaffinity(0)))
  results = compare(systems, sets, _OUT.value, _HEAVY.value, _AUDIOGRAMS.value, _SAVE.value,
                    meta=meta)
  print(table_md(results))
  print(f"wrote {_OUT.value}/results.json and table.md")


if __name__ == "__main__":
  app.run(main)
