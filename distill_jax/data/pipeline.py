"""Input pipeline: validate utterances, bucket by length, pad to static shapes, prefetch.

Data flow:
  manifest utterances -> `prepare_dataset` (normalize + tokenize text, read audio, validate;
  every rejected utterance is counted with its reason) -> `AsrDataset` (examples grouped into
  length buckets, each bucket one static batch shape) -> `BatchIterator` (seeded shuffling per
  epoch, a resumable position, a background thread that assembles the next batches).

Batches are dicts of numpy arrays (paddings: 1.0 marks padding):
  waveform [B, S] float32, wave_paddings [B, S], labels [B, L] int32, label_paddings [B, L],
  weights [B] (0.0 for filler rows that pad the last eval batch), plus `ids` (numpy str array,
  not passed to jitted code).

A bucket's batch size is `batch_seconds / bucket_seconds` (rounded down to a multiple of the
number of data shards, at least one per shard), so every batch holds about the same amount of
padded audio, and XLA compiles one program per bucket.

Audio in memory or decoded per batch: a small corpus is read once into memory (int16, 115 MB
per hour). A large one (LibriSpeech 960 h would need 110 GB) keeps only paths and durations:
`prepare_dataset` then checks that each file exists and reads its length from the header (or
trusts the manifest's `duration`), and `AsrDataset.assemble` decodes the rows of each batch
with a thread pool inside the `BatchIterator`'s background thread, which runs at most
`prefetch` batches ahead (a bounded queue). A file that fails to decode at that point becomes a
filler row (weight 0, all padding) and is counted in `AsrDataset.runtime_skips`; the batch
plan, and so resuming, does not depend on it. `audio_in_memory=None` picks memory below
`MAX_IN_MEMORY_HOURS`.

Multi-host: `BatchIterator` defaults to `jax.process_index()` / `jax.process_count()`, so every
host walks the same global plan (same seed and position) and assembles, and decodes, only its
contiguous slice of each global batch. `eval_batches` gives every host the whole split.
"""

from __future__ import annotations

import collections
import collections.abc
import concurrent.futures
import dataclasses
import logging
import math
import os
import queue
import threading
from typing import Callable, Iterator, Sequence

import numpy as np
import tqdm

from distill_jax import text as text_lib
from distill_jax.audio import io as audio_io
from distill_jax.data.manifest import Utterance

SAMPLE_RATE = 16000
MAX_IN_MEMORY_HOURS = 20.0  # audio_in_memory=None: larger datasets decode per batch

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Example:
  id: str
  path: str
  text: str  # normalized transcript
  labels: np.ndarray  # [U] int32
  num_samples: int
  speaker: str = ""
  engine: str = ""  # TTS engine of a synthetic utterance ("" for real speech)


@dataclasses.dataclass
class DataReport:
  """What was kept and what was skipped, with reasons (written to workdir/data_report.json)."""
  name: str
  kept: int = 0
  kept_seconds: float = 0.0
  skipped: list[dict] = dataclasses.field(default_factory=list)

  def skip(self, utt: Utterance, reason: str, detail: str) -> None:
    self.skipped.append(dict(id=utt.id, path=utt.path, reason=reason, detail=detail))

  def counts(self) -> dict[str, int]:
    return dict(collections.Counter(s["reason"] for s in self.skipped))

  def to_dict(self) -> dict:
    return dict(name=self.name, kept=self.kept, kept_hours=self.kept_seconds / 3600,
                skipped_by_reason=self.counts(), skipped=self.skipped)


@dataclasses.dataclass(frozen=True)
class BucketSpec:
  """Length buckets (upper bounds in seconds) and the padded audio seconds per batch."""
  boundaries: tuple[float, ...] = (2.0, 3.0, 4.0, 5.0, 6.5, 8.0, 10.0, 12.5, 16.0)
  batch_seconds: float = 160.0
  shards: int = 1  # batch sizes are multiples of this (devices x grad-accumulation steps)
  label_multiple: int = 16  # label lengths are rounded up to a multiple of this

  def __post_init__(self):
    if list(self.boundaries) != sorted(self.boundaries) or not self.boundaries:
      raise ValueError(f"bucket boundaries must be increasing, got {self.boundaries}")

  @property
  def max_samples(self) -> int:
    return int(round(self.boundaries[-1] * SAMPLE_RATE))

  def bucket_samples(self, k: int) -> int:
    return int(round(self.boundaries[k] * SAMPLE_RATE))

  def batch_size(self, k: int) -> int:
    per_shard = max(1, int(self.batch_seconds / self.boundaries[k]) // self.shards)
    return per_shard * self.shards

  def bucket_of(self, num_samples: int) -> int:
    """Index of the smallest bucket that holds `num_samples` (boundaries are in seconds)."""
    return int(np.searchsorted(self.boundaries, num_samples / SAMPLE_RATE, side="left"))


def prepare_dataset(
    utterances: Sequence[Utterance],
    tokenizer: text_lib.CharTokenizer,
    buckets: BucketSpec,
    *,
    name: str = "data",
    min_output_frames: Callable[[int], int] | None = None,
    min_seconds: float = 0.1,
    max_seconds: float = 0.0,
    long_utterances: str = "skip",
    audio_in_memory: bool | None = True,
    num_threads: int = 4,
    progress: bool = True,
    text_options: dict | None = None,
) -> tuple["AsrDataset", DataReport]:
  """Validates utterances and reads their audio into memory (int16), or their durations only.

  Every problem is a counted skip with a reason: `text` (cannot normalize, e.g. a number form
  we cannot spell), `empty_transcript`, `oov` (character outside the vocabulary),
  `missing_audio`, `corrupt_audio` (undecodable, empty or non-finite), `too_short`
  (< `min_seconds`), `too_long` (longer than `max_seconds` when > 0, or than the longest
  bucket), `labels_exceed_frames` (more CTC frames needed than the model emits, when
  `min_output_frames` maps samples to output frames).

  `long_utterances='bucket'` (evaluation) keeps utterances longer than the longest bucket:
  one more bucket, rounded up to half a second, holds them (never a `too_long` skip).

  With `audio_in_memory=False` (or None and more than `MAX_IN_MEMORY_HOURS` of manifest
  durations) audio is only checked for existence and its length taken from the manifest's
  `duration` or the file header; decoding happens per batch (see the module docstring), so
  `corrupt_audio` is then found at batch time and counted in `AsrDataset.runtime_skips`.

  Raises:
    ValueError: when nothing is left, naming the reasons.
  """
  if long_utterances not in ("skip", "bucket"):
    raise ValueError(f"long_utterances={long_utterances!r} is not 'skip' or 'bucket'")
  report = DataReport(name=name)
  text_options = text_options or {}
  longest = buckets.max_samples
  candidates = []
  for utt in utterances:
    try:
      norm = text_lib.normalize(utt.text, **text_options)
    except text_lib.TextError as e:
      report.skip(utt, "text", str(e))
      continue
    if not norm:
      report.skip(utt, "empty_transcript", f"transcript {utt.text!r} normalizes to nothing")
      continue
    try:
      labels = np.asarray(tokenizer.encode(norm), np.int32)
    except text_lib.TextError as e:
      report.skip(utt, "oov", str(e))
      continue
    candidates.append((utt, norm, labels))

  if audio_in_memory is None:
    audio_in_memory = sum(u.duration for u in utterances) <= MAX_IN_MEMORY_HOURS * 3600

  def load(utt):
    try:
      if not audio_in_memory:
        return utt, _header_samples(utt), None
      wav = audio_io.load_audio(utt.path, SAMPLE_RATE)
    except FileNotFoundError as e:
      return utt, None, ("missing_audio", str(e))
    except audio_io.AudioError as e:
      reason = "missing_audio" if "not found" in str(e).lower() else "corrupt_audio"
      return utt, None, (reason, str(e))
    return utt, (np.clip(wav, -1.0, 1.0) * 32767.0).round().astype(np.int16), None

  examples, audio, paths = [], {}, {}
  with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
    results = pool.map(load, [c[0] for c in candidates])
    bar = tqdm.tqdm(zip(candidates, results), total=len(candidates), disable=not progress,
                    desc=f"reading {name} audio", unit="utt", leave=False)
    for (utt, norm, labels), (_, wav, err) in bar:
      if err is not None:
        report.skip(utt, *err)
        continue
      n = wav if isinstance(wav, int) else len(wav)
      if n < min_seconds * SAMPLE_RATE:
        report.skip(utt, "too_short", f"{n / SAMPLE_RATE:.3f} s < min_seconds={min_seconds}")
        continue
      if max_seconds and n > max_seconds * SAMPLE_RATE:
        report.skip(utt, "too_long", f"{n / SAMPLE_RATE:.2f} s > max_seconds={max_seconds}")
        continue
      if n > buckets.max_samples and long_utterances == "bucket":
        longest = max(longest, n)
      elif n > buckets.max_samples:
        report.skip(utt, "too_long", f"{n / SAMPLE_RATE:.2f} s > longest bucket "
                    f"{buckets.boundaries[-1]} s")
        continue
      if min_output_frames is not None:
        frames = min_output_frames(n)
        need = len(labels) + int(np.sum(labels[1:] == labels[:-1]))
        if need > frames:
          report.skip(utt, "labels_exceed_frames",
                      f"{need} CTC frames needed, model emits {frames} for {n} samples")
          continue
      examples.append(Example(utt.id, utt.path, norm, labels, n, utt.speaker, utt.engine))
      if audio_in_memory:
        audio[utt.id] = wav
      else:
        paths[utt.id] = utt.path
      report.kept += 1
      report.kept_seconds += n / SAMPLE_RATE
  if not examples:
    raise ValueError(f"{name}: no usable utterances out of {len(utterances)}; skipped by "
                     f"reason: {report.counts()}")
  if longest > buckets.max_samples:
    extra = math.ceil(2 * longest / SAMPLE_RATE) / 2
    log.info("%s: utterances up to %.2f s, longer than the longest bucket (%s s): one more "
             "bucket of %s s", name, longest / SAMPLE_RATE, buckets.boundaries[-1], extra)
    buckets = dataclasses.replace(buckets, boundaries=tuple(buckets.boundaries) + (extra,))
  if not audio_in_memory:
    audio = LazyAudio(paths)
    log.info("%s: %d utterances (%.1f h) decoded per batch, not held in memory", name,
             len(examples), report.kept_seconds / 3600)
  return AsrDataset(examples, audio, buckets, num_threads=num_threads), report


def _header_samples(utt: Utterance) -> int:
  """Samples at 16 kHz from the manifest's duration, or from the file header."""
  if not os.path.exists(utt.path):
    raise audio_io.AudioError(f"{utt.path}: audio file not found")
  if utt.duration > 0:
    return int(round(utt.duration * SAMPLE_RATE))
  frames, rate, _ = audio_io.audio_info(utt.path)
  return int(round(frames * SAMPLE_RATE / rate))


class LazyAudio(collections.abc.Mapping):
  """{utterance id: int16 waveform} that decodes (and resamples) from disk on each lookup."""

  def __init__(self, paths: dict[str, str]):
    self.paths = paths

  def __getitem__(self, uid: str) -> np.ndarray:
    wav = audio_io.load_audio(self.paths[uid], SAMPLE_RATE)
    return (wav * 32767.0).round().astype(np.int16)

  def __iter__(self):
    return iter(self.paths)

  def __len__(self) -> int:
    return len(self.paths)


class AsrDataset:
  """Validated examples with their audio (in memory, or a `LazyAudio`), in length buckets."""

  def __init__(self, examples: Sequence[Example],
               audio: dict[str, np.ndarray] | LazyAudio, buckets: BucketSpec, *,
               num_threads: int = 4):
    self.examples = list(examples)
    self.audio = audio
    self.buckets = buckets
    self.lazy = isinstance(audio, LazyAudio)
    self.num_threads = num_threads
    self._pool: concurrent.futures.ThreadPoolExecutor | None = None
    self._lock = threading.Lock()
    # Lazily decoded files that failed at batch time (filler rows): dicts like DataReport's.
    self.runtime_skips: list[dict] = []
    self.bucket_members: list[list[int]] = [[] for _ in buckets.boundaries]
    for i, ex in enumerate(self.examples):
      self.bucket_members[buckets.bucket_of(ex.num_samples)].append(i)
    m = buckets.label_multiple
    self.label_lengths = [
        max(m, -(-max((len(self.examples[i].labels) for i in mem), default=1) // m) * m)
        for mem in self.bucket_members]

  def __len__(self) -> int:
    return len(self.examples)

  @property
  def total_seconds(self) -> float:
    return sum(ex.num_samples for ex in self.examples) / SAMPLE_RATE

  def batch_shapes(self) -> list[tuple[int, int, int]]:
    """(batch, samples, labels) of every bucket that holds examples."""
    return [(self.buckets.batch_size(k), self.buckets.bucket_samples(k), self.label_lengths[k])
            for k, mem in enumerate(self.bucket_members) if mem]

  def epoch_plan(self, seed: int, epoch: int, *, shuffle: bool,
                 drop_remainder: bool) -> list[tuple[int, list[int]]]:
    """The epoch's batches as (bucket, example indices); a pure function of (seed, epoch)."""
    rng = np.random.default_rng([seed, epoch])
    plan = []
    for k, members in enumerate(self.bucket_members):
      idx = np.array(members)
      if shuffle:
        idx = rng.permutation(idx)
      bs = self.buckets.batch_size(k)
      for start in range(0, len(idx), bs):
        chunk = idx[start:start + bs].tolist()
        if len(chunk) < bs and drop_remainder:
          continue
        plan.append((k, chunk))
    if shuffle:
      order = rng.permutation(len(plan))
      plan = [plan[i] for i in order]
    return plan

  def assemble(self, bucket: int, indices: Sequence[int], *, process_index: int = 0,
               process_count: int = 1) -> dict[str, np.ndarray]:
    """Pads the examples of one batch to the bucket's static shape (filler rows weight 0).

    With several hosts, each assembles (and decodes) only its contiguous slice of the global
    batch rows. Lazily decoded rows are decoded on `num_threads` threads; a row that fails to
    decode becomes a filler row and is recorded in `runtime_skips`.
    """
    bs = self.buckets.batch_size(bucket)
    if bs % process_count:
      raise ValueError(f"batch size {bs} of bucket {bucket} is not divisible by "
                       f"process_count={process_count}")
    per_host = bs // process_count
    rows = list(indices) + [-1] * (bs - len(indices))
    rows = rows[process_index * per_host:(process_index + 1) * per_host]
    s, l = self.buckets.bucket_samples(bucket), self.label_lengths[bucket]
    wav = np.zeros((per_host, s), np.float32)
    wpad = np.ones((per_host, s), np.float32)
    lab = np.zeros((per_host, l), np.int32)
    lpad = np.ones((per_host, l), np.float32)
    weights = np.zeros((per_host,), np.float32)
    ids = np.full((per_host,), "", dtype=object)
    for r, (i, a) in enumerate(zip(rows, self._rows_audio(rows))):
      if i < 0 or a is None:
        continue
      ex = self.examples[i]
      a = a[:min(s, ex.num_samples)] if self.lazy else a
      wav[r, :len(a)] = a.astype(np.float32) / 32767.0
      wpad[r, :len(a)] = 0.0
      lab[r, :len(ex.labels)] = ex.labels
      lpad[r, :len(ex.labels)] = 0.0
      weights[r] = 1.0
      ids[r] = ex.id
    return dict(waveform=wav, wave_paddings=wpad, labels=lab, label_paddings=lpad,
                weights=weights, ids=ids)

  def _rows_audio(self, rows: Sequence[int]) -> list[np.ndarray | None]:
    if not self.lazy:
      return [None if i < 0 else self.audio[self.examples[i].id] for i in rows]
    with self._lock:
      if self._pool is None:
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max(1, self.num_threads), thread_name_prefix="decode")
    return list(self._pool.map(self._decode_row, rows))

  def _decode_row(self, i: int) -> np.ndarray | None:
    if i < 0:
      return None
    ex = self.examples[i]
    try:
      return self.audio[ex.id]
    except audio_io.AudioError as e:
      with self._lock:
        if not any(d["id"] == ex.id for d in self.runtime_skips):
          self.runtime_skips.append(dict(id=ex.id, path=ex.path, reason="corrupt_audio",
                                         detail=str(e)))
          log.warning("filler row for undecodable audio: %s", e)
      return None


@dataclasses.dataclass(frozen=True)
class Position:
  """Where the next batch to be consumed lies: checkpoints store it for exact resume."""
  epoch: int = 0
  index: int = 0

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict) -> "Position":
    return cls(int(d["epoch"]), int(d["index"]))


class BatchIterator:
  """Endless (training) or one-pass (evaluation) iterator with background prefetch.

  `position` is that of the next batch `next()` returns, whatever the prefetch thread has
  already assembled, so a checkpoint taken between steps resumes exactly.
  """

  def __init__(self, dataset: AsrDataset, *, seed: int = 0, shuffle: bool = True,
               drop_remainder: bool = True, repeat: bool = True,
               position: Position = Position(), prefetch: int = 4,
               process_index: int | None = None, process_count: int | None = None):
    """`process_index` / `process_count` default to jax.process_index() / process_count()."""
    if process_index is None or process_count is None:
      import jax  # pylint: disable=g-import-not-at-top
      process_index, process_count = jax.process_index(), jax.process_count()
    self.dataset = dataset
    self.seed, self.shuffle = seed, shuffle
    self.drop_remainder, self.repeat = drop_remainder, repeat
    self.position = position
    self._process = (process_index, process_count)
    self._queue: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._produce, args=(position,), daemon=True)
    self._thread.start()

  def _plan(self, epoch: int):
    return self.dataset.epoch_plan(self.seed, epoch, shuffle=self.shuffle,
                                   drop_remainder=self.drop_remainder)

  def _produce(self, start: Position) -> None:
    epoch, index = start.epoch, start.index
    try:
      while not self._stop.is_set():
        plan = self._plan(epoch)
        if not plan:
          raise ValueError(f"epoch plan is empty: {len(self.dataset)} examples cannot fill one "
                           f"batch of any bucket (drop_remainder={self.drop_remainder})")
        for i in range(index, len(plan)):
          k, idx = plan[i]
          batch = self.dataset.assemble(k, idx, process_index=self._process[0],
                                        process_count=self._process[1])
          nxt = Position(epoch, i + 1) if i + 1 < len(plan) else Position(epoch + 1, 0)
          while not self._stop.is_set():
            try:
              self._queue.put((batch, nxt), timeout=0.1)
              break
            except queue.Full:
              continue
          if self._stop.is_set():
            return
        epoch, index = epoch + 1, 0
        if not self.repeat:
          break
      self._queue.put((None, None))
    except Exception as e:  # surfaced in the consumer thread
      self._queue.put((e, None))

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    batch, nxt = self._queue.get()
    if isinstance(batch, Exception):
      raise batch
    if batch is None:
      raise StopIteration
    self.position = nxt
    return batch

  def close(self) -> None:
    self._stop.set()
    self._thread.join(timeout=5)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def eval_batches(dataset: AsrDataset) -> Iterator[dict[str, np.ndarray]]:
  """One ordered pass over every example (last batch per bucket padded with filler rows)."""
  with BatchIterator(dataset, shuffle=False, drop_remainder=False, repeat=False,
                     process_index=0, process_count=1) as it:
    yield from it
