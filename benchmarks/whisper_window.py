r"""The Whisper CTC teacher and its 30 s window: full, packed and shortened windows compared.

Whisper's encoder was trained on 3000 mel frames (30 s); a short clip alone in that window pays
for 30 s of compute. The same utterances of a manifest go through the teacher of a Whisper
CTC-head folder (`convert/whisper_ctc_folder.py`, read by `convert/teacher_folder.load_folder`)
in three modes:

  full    each utterance alone at the start of a full window (`window_samples` = the model's
          full window, 480000 samples for Whisper), --windows_per_batch windows per forward;
  packed  utterances packed into full windows (`data/packing.py`: greedy first-fit decreasing by
          duration, at least --gap_seconds of zeros between neighbours, starts on 320-sample
          frame boundaries), --windows_per_batch windows per forward; each utterance's frames
          are cut back out: at a start s (a multiple of 320 samples, 20 ms per encoder
          frame), frames [s / 320, s / 320 + k), k = the teacher's `num_frames(n)` for the
          utterance's n samples ((n // 160 + 1) // 2: the frames it has alone), so every mode
          decodes the same frames per utterance (the brief's [start // 320, end // 320) has
          floor(n / 320), one fewer when n % 320 >= 160);
  short   shortened windows (`window_samples=0`: the window is the batch's padded length and
          the encoder's positions are sliced to it): utterances bucketed by length, padded to
          the bucket's bound (--short_buckets, seconds, plus the full window), batch size
          floor(--short_batch_seconds / bound) per bucket.

A forward's last batch in a mode or bucket holds the rows that are left (its own compiled
shape; no filler rows are computed). Every padded shape runs once untimed first (XLA compiles
it); then the forwards of a mode are timed, --repeats passes, the median pass reported.

Per mode: greedy CTC WER and CER (`decode.ctc.ctc_greedy` and `train.evaluate.score`, jiwer on
the transcripts normalized by `data.pipeline.prepare_dataset` with --language, as evaluation
does); CPU-seconds per audio hour of the teacher forward (wall seconds x --threads / audio
hours; the process is pinned to --threads CPUs and, for 1 thread, XLA runs one intra-op thread,
as `launch.rtf` and `benchmarks.bench_whisper` do; the process CPU time, which waits for other
processes do not inflate, is reported beside it); the padded fraction (share of the samples
fed to the encoder that are not utterance audio: padding, gaps, window tails).

Every utterance of the manifest (the first --max_utterances) is used in every mode or listed as
a skip with its reason: longer than the full window (`longer_than_window`), or rejected by
`prepare_dataset` (unreadable audio, characters outside the teacher's vocabulary, ...).

Edge effects of packing: Whisper attends over its whole window, so an utterance's frames see
its neighbours (0.4 s of silence is enough for the convolution stem's receptive field, 5 mel
frames, but not for attention); the log-mel dynamic-range clamp (max - 8) is taken over the
whole window, so a loud neighbour raises a quiet utterance's floor; later utterances sit at
later positions of the window. The full mode is the reference: one clip at the start of a
window, as Whisper was trained. The short mode feeds windows Whisper never saw in training
(unless the head was trained with them: the table marks the head's own mode).

Calibration from the issue (not measured here): CTranslate2 int8 on 1 thread costs
470-1,300 CPU-s per audio hour with one 2-9 s clip per 30 s window, about 90-185 packed.

  nice -n 19 python -m benchmarks.whisper_window --teacher=teachers/whisper_ctc \
      --manifest=datasets/speechocean762/test.jsonl --max_utterances=0 \
      --out=runs/whisper_window.json

Prints a markdown table and writes --out (JSON: settings, skips, references, per mode the
figures, batch shapes and every hypothesis; rewritten after each mode, in --modes order). On a
shared machine the times are indicative only.
"""

import collections
import dataclasses
import importlib.metadata
import json
import os
import statistics
import sys
import time

from absl import app, flags
import numpy as np

from benchmarks import common as bcommon
from distill_jax.data import packing  # pure Python: no JAX before the process is pinned

_TEACHER = flags.DEFINE_string("teacher", None, "Whisper CTC-head teacher folder.")
_MANIFEST = flags.DEFINE_string("manifest", None, "JSONL manifest (data/manifest.py).")
_MAX_UTTERANCES = flags.DEFINE_integer("max_utterances", 0, "The first N utterances (0: all).")
_OUT = flags.DEFINE_string("out", None, "Where to write the JSON results.")
_MODES = flags.DEFINE_list("modes", ["full", "packed", "short"], "Modes to measure, in this "
                           "order (the JSON is rewritten after each).")
_WINDOWS_PER_BATCH = flags.DEFINE_integer(
    "windows_per_batch", 4, "Full windows per forward in the full and packed modes (4 x 30 s = "
    "120 s of padded audio, the head's training batches).")
_SHORT_BUCKETS = flags.DEFINE_list(
    "short_buckets", ["3", "5", "7", "10", "14", "20"], "Short mode: bucket bounds in seconds "
    "(configs/whisper_head.py's), the full window added as the last.")
_SHORT_BATCH_SECONDS = flags.DEFINE_float(
    "short_batch_seconds", 120.0, "Short mode: padded seconds per forward (batch size = this / "
    "the bucket's bound, at least 1).")
_GAP_SECONDS = flags.DEFINE_float("gap_seconds", 0.4, "Packed mode: silence between utterances.")
_REPEATS = flags.DEFINE_integer("repeats", 1, "Timed passes per mode (median reported).")
_THREADS = flags.DEFINE_integer("threads", 1, "CPUs to pin to (0: do not pin).")
_LANGUAGE = flags.DEFINE_string("language", "en", "Text normalization (text.normalize).")
flags.mark_flags_as_required(["teacher", "manifest", "out"])

MODES = ("full", "packed", "short")
SAMPLE_RATE = 16000
_PINNED = "DISTILL_JAX_WHISPER_WINDOW_PINNED"
_DECODE_ROWS = 64
CALIBRATION = ("CTranslate2 int8, 1 thread (issue 24): 470-1,300 CPU-s per audio hour with one "
               "2-9 s clip per 30 s window; about 90-185 packed")


def _pin_and_reexec(threads: int) -> None:
  """Restarts this command on `threads` CPUs with matching XLA flags (JAX reads both once)."""
  cpus = sorted(os.sched_getaffinity(0))
  if threads > len(cpus):
    raise app.UsageError(f"--threads={threads} but this process may use {len(cpus)} CPU(s)")
  env = dict(os.environ, **{_PINNED: "1"})
  if threads == 1:
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                        " intra_op_parallelism_threads=1").strip()
  os.sched_setaffinity(0, cpus[:threads])
  os.execve(sys.executable, [sys.executable, "-m", "benchmarks.whisper_window"] + sys.argv[1:],
            env)


@dataclasses.dataclass
class _Data:
  ids: list[str]
  texts: list[str]  # normalized references
  audio: list[np.ndarray]  # int16 [n] each (as prepare_dataset holds it; 115 MB per hour)
  skipped: list[dict]

  @property
  def lengths(self) -> list[int]:
    return [len(a) for a in self.audio]


def _load_data(tokenizer, window: int) -> _Data:
  """The manifest's utterances (normalized text, audio), every rejected one listed."""
  # pylint: disable=import-outside-toplevel
  from distill_jax.data import manifest as manifest_lib
  from distill_jax.data import pipeline
  # pylint: enable=import-outside-toplevel
  utts = manifest_lib.read_manifest(_MANIFEST.value)
  if _MAX_UTTERANCES.value:
    utts = utts[:_MAX_UTTERANCES.value]
  dataset, report = pipeline.prepare_dataset(
      utts, tokenizer, pipeline.BucketSpec(boundaries=(window / SAMPLE_RATE,)),
      name=os.path.basename(_MANIFEST.value), long_utterances="bucket", audio_in_memory=True,
      progress=False, text_options=dict(language=_LANGUAGE.value))
  data = _Data([], [], [], list(report.skipped))
  for ex in dataset.examples:
    if ex.num_samples > window:
      data.skipped.append(dict(id=ex.id, path=ex.path, reason="longer_than_window",
                               detail=f"{ex.num_samples / SAMPLE_RATE:.2f} s > the "
                               f"{window / SAMPLE_RATE:.2f} s window"))
      continue
    data.ids.append(ex.id)
    data.texts.append(ex.text)
    data.audio.append(dataset.audio[ex.id])
  if not data.ids:
    raise ValueError(f"{_MANIFEST.value}: no utterance left to measure; skipped: "
                     f"{collections.Counter(s['reason'] for s in data.skipped)}")
  return data


def _chunks(rows: list, size: int) -> list[list]:
  return [rows[k:k + size] for k in range(0, len(rows), size)]


def plan_mode(mode: str, lengths: list[int], window: int, frame: int) -> tuple[int, list]:
  """(the model's window_samples, batches [(padded samples S, rows)]) of a mode; a row is a
  list of (utterance index, start sample)."""
  n = len(lengths)
  per_batch = _WINDOWS_PER_BATCH.value
  if mode == "full":
    return window, [(window, rows) for rows in _chunks([[(i, 0)] for i in range(n)], per_batch)]
  if mode == "packed":
    packed = packing.pack(lengths, window, int(round(_GAP_SECONDS.value * SAMPLE_RATE)), frame)
    if packed.too_long:  # _load_data skipped them
      raise AssertionError(f"utterances {packed.too_long} are longer than the window")
    return window, [(window, rows) for rows in _chunks(packed.windows, per_batch)]
  bounds = sorted({int(round(float(b) * SAMPLE_RATE)) for b in _SHORT_BUCKETS.value} | {window})
  if bounds[0] <= 0 or bounds[-1] > window:
    raise app.UsageError(f"--short_buckets={','.join(_SHORT_BUCKETS.value)}: bounds must be in "
                         f"(0, {window / SAMPLE_RATE:g}] s (the full window)")
  members = collections.defaultdict(list)
  for i, length in enumerate(lengths):
    members[next(b for b in bounds if length <= b)].append([(i, 0)])
  batches = []
  for bound in sorted(members):
    size = max(1, int(_SHORT_BATCH_SECONDS.value * SAMPLE_RATE // bound))
    batches += [(bound, rows) for rows in _chunks(members[bound], size)]
  return 0, batches


def _assemble(rows: list, samples: int, data: _Data) -> tuple[np.ndarray, np.ndarray]:
  """waveform [B, S], paddings [B, S] (gaps and tails are padding, zeros)."""
  wav = np.zeros((len(rows), samples), np.float32)
  pad = np.ones((len(rows), samples), np.float32)
  for r, row in enumerate(rows):
    for i, start in row:
      a = data.audio[i].astype(np.float32) / 32767.0  # as data.pipeline's batches
      wav[r, start:start + len(a)] = a
      pad[r, start:start + len(a)] = 0.0
  return wav, pad


def make_forward(teacher, window_samples: int):
  """Jitted (params, waveform [B, S], paddings [B, S]) -> (log_probs [B, T', V], frame_paddings
  [B, T']) of the teacher with its model's `window_samples` replaced."""
  # pylint: disable=import-outside-toplevel
  import jax
  from distill_jax.models.whisper_teacher import WhisperCtcTeacher
  # pylint: enable=import-outside-toplevel
  model = dataclasses.replace(teacher.model, window_samples=window_samples)
  tea = WhisperCtcTeacher(model, teacher.params, teacher.vocab)

  @jax.jit
  def forward(params, wav, pad):
    out = tea.forward(params, wav, pad)
    return out.log_probs, out.frame_paddings
  return forward


def run_mode(teacher, forward, window_samples: int, compiled: set, batches: list,
             data: _Data) -> dict:
  """Times `forward` over a mode's batches; every utterance's valid log-probs.

  Shapes not in `compiled` (a set of (window_samples, B, S), updated) run once untimed first
  (`first_calls_s`: mostly XLA's compilation).
  """
  import jax  # pylint: disable=import-outside-toplevel
  first_calls_s, shapes = 0.0, []
  for samples, rows in batches:
    if (len(rows), samples) not in shapes:
      shapes.append((len(rows), samples))
    if (window_samples, len(rows), samples) not in compiled:
      compiled.add((window_samples, len(rows), samples))
      wav, pad = _assemble(rows, samples, data)
      t0 = time.perf_counter()
      jax.block_until_ready(forward(teacher.params, wav, pad))
      first_calls_s += time.perf_counter() - t0
  passes, log_probs = [], {}
  for rep in range(_REPEATS.value):
    wall = cpu = 0.0
    for samples, rows in batches:
      wav, pad = jax.device_put(_assemble(rows, samples, data))
      jax.block_until_ready((wav, pad))
      t0, c0 = time.perf_counter(), time.process_time()
      lp, fpad = jax.block_until_ready(forward(teacher.params, wav, pad))
      wall += time.perf_counter() - t0
      cpu += time.process_time() - c0
      if rep:
        continue
      lp, fpad = np.asarray(lp), np.asarray(fpad)
      for r, row in enumerate(rows):
        for i, start in row:
          first, stop = packing.frame_range(start, teacher.num_frames(len(data.audio[i])),
                                            teacher.frame_samples)
          if stop > lp.shape[1] or (len(row) == 1 and not np.array_equal(
              np.arange(lp.shape[1]) < stop, fpad[r] < 0.5)):
            # A packed row's frame_paddings mean nothing: the teacher assumes right padding.
            raise AssertionError(f"row {r} of a [{len(rows)}, {samples}] batch: utterance "
                                 f"{data.ids[i]}'s frames [{first}, {stop}) are not the "
                                 "teacher's valid frames")
          log_probs[i] = lp[r, first:stop].copy()  # not a view of the whole batch
    passes.append(dict(wall_s=wall, process_cpu_s=cpu))
  fed = sum(len(rows) * samples for samples, rows in batches)
  return dict(window_samples=window_samples, forwards=len(batches),
              rows=sum(len(rows) for _, rows in batches),
              batch_sizes=dict(sorted(collections.Counter(len(r) for _, r in batches).items())),
              shapes=shapes, first_calls_s=first_calls_s, passes=passes,
              wall_s=statistics.median(p["wall_s"] for p in passes),
              process_cpu_s=statistics.median(p["process_cpu_s"] for p in passes),
              padded_fraction=1.0 - sum(data.lengths) / fed, log_probs=log_probs)


def greedy_texts(log_probs: dict, tokenizer) -> dict[int, str]:
  """{utterance index: greedy CTC transcript} from {index: [T, V] log-probs}, batched."""
  from distill_jax.decode import ctc as ctc_decode  # pylint: disable=import-outside-toplevel
  order = sorted(log_probs, key=lambda i: len(log_probs[i]))
  out = {}
  for chunk in _chunks(order, _DECODE_ROWS):
    t = -(-max(len(log_probs[i]) for i in chunk) // 64) * 64
    v = log_probs[chunk[0]].shape[1]
    lp = np.zeros((len(chunk), t, v), np.float32)
    pad = np.ones((len(chunk), t), np.float32)
    for r, i in enumerate(chunk):
      lp[r, :len(log_probs[i])] = log_probs[i]
      pad[r, :len(log_probs[i])] = 0.0
    ids, lengths = ctc_decode.ctc_greedy(lp, pad, tokenizer.blank_id)
    for r, tokens in enumerate(ctc_decode.to_lists(ids, lengths)):
      out[chunk[r]] = tokenizer.decode(tokens)
  return out


def _report(meta: dict, results: dict) -> None:
  print(f"\nWhisper CTC teacher {meta['teacher']} on {meta['manifest']}: "
        f"{meta['utterances']} utterances, {meta['audio_seconds'] / 60:.1f} min of audio "
        f"({len(meta['skipped'])} skipped: {meta['skipped_by_reason'] or 'none'}); "
        f"{meta['threads']} thread(s), {meta['cpu']}")
  print("\n| mode | window | batch sizes | forwards | padded fraction | CPU-s / audio h "
        "(wall x threads) | process CPU-s / audio h | WER | CER |")
  print("|---|---|---|---|---|---|---|---|---|")
  for mode, r in results.items():
    window = ("batch length" if not r["window_samples"]
              else f"{r['window_samples'] / SAMPLE_RATE:g} s")
    trained = " (the head's)" if r["window_samples"] == meta["head_window_samples"] else ""
    sizes = ", ".join(f"{b} x{c}" for b, c in r["batch_sizes"].items())
    print(f"| {mode} | {window}{trained} | {sizes} | {r['forwards']} | "
          f"{r['padded_fraction']:.3f} | {r['cpu_s_per_audio_hour']:.0f} | "
          f"{r['process_cpu_s_per_audio_hour']:.0f} | {r['wer']:.4f} | {r['cer']:.4f} |")
  print(f"\nReference: {CALIBRATION}.")
  print(f"Load average before {meta['load_average_before']}, after "
        f"{meta['load_average_after']}; XLA_FLAGS '{meta['xla_flags']}'.")
  for s in meta["skipped"][:20]:
    print(f"skipped {s['id']}: {s['reason']} ({s['detail']})")
  if len(meta["skipped"]) > 20:
    print(f"... and {len(meta['skipped']) - 20} more skips (all in {_OUT.value})")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  bad = [m for m in _MODES.value if m not in MODES]
  if bad or not _MODES.value or len(set(_MODES.value)) != len(_MODES.value):
    raise app.UsageError(f"--modes={','.join(_MODES.value)}: each must be one of {MODES}, "
                         "once")
  if (_WINDOWS_PER_BATCH.value < 1 or _REPEATS.value < 1 or _MAX_UTTERANCES.value < 0
      or _THREADS.value < 0 or _GAP_SECONDS.value < 0 or _SHORT_BATCH_SECONDS.value <= 0):
    raise app.UsageError("need --windows_per_batch >= 1, --repeats >= 1, --max_utterances >= 0,"
                         " --threads >= 0, --gap_seconds >= 0, --short_batch_seconds > 0")
  try:
    [float(b) for b in _SHORT_BUCKETS.value]
  except ValueError:
    raise app.UsageError(f"--short_buckets={','.join(_SHORT_BUCKETS.value)}: not numbers") from None
  if _THREADS.value and not os.environ.get(_PINNED):
    _pin_and_reexec(_THREADS.value)
  cpus = sorted(os.sched_getaffinity(0))
  if _THREADS.value and len(cpus) != _THREADS.value:
    raise RuntimeError(f"--threads={_THREADS.value} but the process may use CPUs {cpus}")
  # JAX is imported only now, after the re-exec pinned this process.
  # pylint: disable=import-outside-toplevel
  import jax
  from distill_jax.audio import whisper_features
  from distill_jax.convert import teacher_folder
  from distill_jax.models.whisper_teacher import WhisperCtcTeacher
  from distill_jax.train import evaluate
  # pylint: enable=import-outside-toplevel
  teacher, tokenizer = teacher_folder.load_folder(_TEACHER.value)
  if not isinstance(teacher, WhisperCtcTeacher):
    raise app.UsageError(f"--teacher={_TEACHER.value}: a {teacher.family} teacher, not a "
                         "Whisper CTC-head folder (convert/whisper_ctc_folder.py)")
  window = teacher.model.whisper.num_frames * whisper_features.HOP_LENGTH
  data = _load_data(tokenizer, window)
  audio_seconds = sum(data.lengths) / SAMPLE_RATE
  threads = _THREADS.value or len(cpus)
  meta = dict(teacher=os.path.abspath(_TEACHER.value), manifest=os.path.abspath(_MANIFEST.value),
              max_utterances=_MAX_UTTERANCES.value, language=_LANGUAGE.value,
              utterances=len(data.ids), audio_seconds=audio_seconds, skipped=data.skipped,
              skipped_by_reason=dict(collections.Counter(s["reason"] for s in data.skipped)),
              window_samples=window, head_window_samples=teacher.model.window_samples,
              windows_per_batch=_WINDOWS_PER_BATCH.value, gap_seconds=_GAP_SECONDS.value,
              short_buckets=[float(b) for b in _SHORT_BUCKETS.value],
              short_batch_seconds=_SHORT_BATCH_SECONDS.value, repeats=_REPEATS.value,
              threads=threads, cpus=cpus, xla_flags=os.environ.get("XLA_FLAGS", ""),
              jax_devices=len(jax.devices()), cpu=bcommon.cpu_description(),
              jax=importlib.metadata.version("jax"), calibration=CALIBRATION,
              command=" ".join([sys.executable] + sys.argv),
              load_average_before=[round(x, 2) for x in os.getloadavg()],
              references=dict(zip(data.ids, data.texts)))
  results, forwards, compiled = {}, {}, set()
  for mode in _MODES.value:
    window_samples, batches = plan_mode(mode, data.lengths, window, teacher.frame_samples)
    if window_samples not in forwards:  # full and packed share theirs (and its compilations)
      forwards[window_samples] = make_forward(teacher, window_samples)
    r = run_mode(teacher, forwards[window_samples], window_samples, compiled, batches, data)
    texts = greedy_texts(r.pop("log_probs"), tokenizer)
    hyps = [texts[i] for i in range(len(data.ids))]
    r.update(evaluate.score(data.texts, hyps))
    r["cpu_s_per_audio_hour"] = r["wall_s"] * threads / (audio_seconds / 3600)
    r["process_cpu_s_per_audio_hour"] = r["process_cpu_s"] / (audio_seconds / 3600)
    r["hypotheses"] = dict(zip(data.ids, hyps))
    results[mode] = r
    print(f"{mode}: {r['forwards']} forwards in {r['wall_s']:.1f} s (first calls of "
          f"new shapes {r['first_calls_s']:.1f} s)", file=sys.stderr, flush=True)
    meta["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    _write(meta, results)  # after every mode: a long run keeps what it measured
  _report(meta, results)
  print(f"\nwrote {_OUT.value}")


def _write(meta: dict, results: dict) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  tmp = _OUT.value + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(dict(meta=meta, modes=results), f, indent=1)
  os.replace(tmp, _OUT.value)


if __name__ == "__main__":
  app.run(main)
