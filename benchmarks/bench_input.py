"""Does the input pipeline keep up with the training step? Both measured in one run:

  python -m benchmarks.bench_input --config=configs/demo.py --manifest=corpora/large10/train.jsonl

Pipeline: the manifest's utterances prepared for per-batch decoding (`audio_in_memory=False`,
the path large corpora take: FLAC decode + resample + validate + bucket + pad in the
`BatchIterator`'s background thread and its decode pool), consumed as fast as possible; also
with audio held in memory. Step: the config's student train step (jitted, as in
benchmarks/bench_step.py) timed on every batch shape the pipeline delivered. Consumption is the
real (unpadded) audio of the delivered batches divided by the summed step times of their
shapes. Prints a table and the ratio pipeline / step (target >= 5).
"""

import time

import jax
import numpy as np
from absl import app, flags

from distill_jax.data import manifest as manifest_lib
from distill_jax.data import pipeline
from distill_jax.models import build
from distill_jax.train import splits
from benchmarks import common as bcommon
from launch import common

_CONFIG = common.define_config_flag()
_MANIFEST = flags.DEFINE_string("manifest", None, "JSONL manifest (default: config.data.train).")
_MAX_UTTS = flags.DEFINE_integer("max_utterances", 3000, "Utterances read from the manifest.")
_BATCHES = flags.DEFINE_integer("batches", 80, "Batches drawn from the pipeline per mode.")
_THREADS = flags.DEFINE_integer("threads", 4, "Decode threads of the pipeline.")
_RUNS = flags.DEFINE_integer("runs", 3, "Timed steps per batch shape (median).")


def _drain(ds: pipeline.AsrDataset, n: int) -> tuple[float, list[dict]]:
  """Seconds to draw n batches (iterator start included) and the batches' row statistics."""
  stats = []
  t0 = time.perf_counter()
  with pipeline.BatchIterator(ds, seed=0, prefetch=4) as it:
    for _ in range(n):
      b = next(it)
      real = b["weights"] > 0
      stats.append(dict(shape=b["waveform"].shape, utts=int(real.sum()),
                        audio=float((1.0 - b["wave_paddings"][real]).sum()) / 16000))
  return time.perf_counter() - t0, stats


def main(argv):
  del argv
  common.enable_compilation_cache()
  config = _CONFIG.value
  path = _MANIFEST.value or config.data.train
  utts = manifest_lib.read_manifest(path)[:_MAX_UTTS.value]
  tok = splits.load_tokenizer(config)
  spec = splits.bucket_spec(config)
  frames = lambda n: build.output_frames(config.model, n)
  rows = []
  for mode, in_memory in (("decode per batch", False), ("audio in memory", True)):
    t0 = time.perf_counter()
    ds, rep = pipeline.prepare_dataset(utts, tok, spec, name="bench", progress=False,
                                       min_output_frames=frames, audio_in_memory=in_memory,
                                       num_threads=_THREADS.value)
    prep = time.perf_counter() - t0
    secs, stats = _drain(ds, _BATCHES.value)
    rows.append((mode, prep, secs, stats, ds))
  print(f"\n{len(utts)} utterances of {path} ({rep.kept} kept), {_BATCHES.value} batches per "
        f"mode, {_THREADS.value} decode threads, batch_seconds={config.data.batch_seconds}")

  # The training step on every batch shape delivered.
  ds = rows[0][4]
  model = build.build_student(config.model, tok.vocab_size)
  par, state, params = bcommon.train_step(config, model, ds)
  step_s = {}
  for k, members in enumerate(ds.bucket_members):
    if not members:
      continue
    host = ds.assemble(k, members[:ds.buckets.batch_size(k)])
    shape = host["waveform"].shape
    if not any(s["shape"] == shape for s in rows[0][3]):
      continue
    batch = par.put_batch(host)
    state, m = par.step(state, batch)
    jax.block_until_ready(m)
    times = []
    for _ in range(_RUNS.value):
      t0 = time.perf_counter()
      state, m = par.step(state, batch)
      jax.block_until_ready(m)
      times.append(time.perf_counter() - t0)
    step_s[shape] = float(np.median(times))
  stats = rows[0][3]
  step_total = sum(step_s[s["shape"]] for s in stats)
  step_utts = sum(s["utts"] for s in stats) / step_total
  step_audio = sum(s["audio"] for s in stats) / step_total

  print(f"\n{'what':<40} {'prepare s':>9} {'utts/s':>9} {'audio s/s':>10} {'x step':>7}")
  for mode, prep, secs, st, _ in rows:
    u = sum(s["utts"] for s in st) / secs
    a = sum(s["audio"] for s in st) / secs
    print(f"{'pipeline: ' + mode:<40} {prep:>9.1f} {u:>9.1f} {a:>10.1f} {a / step_audio:>7.1f}")
  print(f"{'train step (' + config.name + ' student)':<40} {'':>9} {step_utts:>9.1f} "
        f"{step_audio:>10.1f} {1.0:>7.1f}")
  print("\nstep ms per batch shape: " + ", ".join(
      f"{b}x{s}: {1000 * t:.0f}" for (b, s), t in sorted(step_s.items())))
  lazy_audio = sum(s["audio"] for s in rows[0][3]) / rows[0][2]
  print(f"ratio (pipeline decoding per batch / step consumption): {lazy_audio / step_audio:.1f}x"
        f" (target >= 5x)")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
