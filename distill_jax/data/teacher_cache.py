"""Offline teacher cache: its storage format, and reading it back for distillation.

The writer (`train/teacher_cache.py`) runs a frozen teacher (`models/teacher.py`) once over a
dataset; this module defines what it stores and reads it: `open_cache` checks that a cache
belongs to the teacher, storage format and audio at hand, and `TeacherCache.batch` returns the
padded arrays the online teacher would have produced for a pipeline batch. The reader is given
the teacher's frame-count function (`Teacher.num_frames`); it never runs a model.


Storage (per utterance, valid frames only; N = the shard's total frames):
  full (`top_k=0`): `log_probs.npy` float16 [N, V].
  top-k (`top_k=k`): `topk_log_probs.npy` float16 [N, k] (the k largest log-probs, descending),
    `topk_ids.npy` [N, k] (uint8 when V <= 256, else int16), `rest_log_mass.npy` float32 [N]
    (log of the probability mass outside the top k, computed in float32 before rounding).
  hidden (`layers=(l1, ...)`, indices into the teacher's [L + 1] hidden-state stack, 0 = the
    first transformer layer's input): `hidden.npy` float16 [N, len(layers), D].
`densify` rebuilds a dense [.., V] distribution from top-k: the rest mass is spread uniformly
over the V - k other ids (each gets rest - log(V - k); never more than the smallest top-k entry,
so the ranking is kept), then the row is renormalized in float32 (the float16 rounding of the
top-k values leaves the sum off 1 by up to ~1e-3 relative; renormalizing shifts every log-prob
by that constant).

On-disk layout of `out_dir`:
  cache_meta.json        teacher (path, `models.teacher.params_fingerprint`,
                         `Teacher.describe()`, compute dtype, padding invariance), storage
                         format (dtypes, top_k, layers, hidden size), vocabulary, frame rate,
                         manifest path, audio hash of the whole set, `complete` flag.
  shards/00000/          one folder per shard of `shard_size` consecutive utterances (in
    index.json           eval_batches order): ids, frame offsets and counts, sample counts,
    *.npy                the bucket's padded length and the sha256 of the decoded audio, per
                         utterance; one .npy per field, read with `np.load(mmap_mode="r")`.
A shard is written to `shards/00000.tmp-<pid>/` (fields preallocated with `open_memmap`, so
memory stays bounded whatever the shard size) and renamed when complete, so a shard folder is
either complete or absent. Re-running `build_cache` skips shards whose ids, padded lengths and
audio hashes match the plan (an unchanged corpus is a no-op: no file is rewritten), rebuilds the
others, and deletes shards that are no longer part of the plan.

Identity checks. `models.teacher.params_fingerprint` is the sha256 over every param leaf (key
path, dtype, shape, bytes; leaves sorted by key path), so a cache is tied to the exact weights, not to a file
name. The audio of each utterance is identified by the sha256 of its decoded int16 samples as
`AsrDataset.audio` holds them (what the teacher actually saw, independent of file format,
path or mtime). `open_cache` raises ValueError naming the mismatch: another teacher, another
storage format (top_k, layers, compute dtype, config, vocabulary), or, given the dataset, an
utterance whose audio changed (named by id) or that the cache lacks.

Exactness. Batch rows are independent in the teacher, so a cached utterance equals the online
teacher's output for any batch that pads it to the same length. For the stable-layer-norm family
with an attention mask the valid frames do not depend on the padded length at all; for the
others (group norm over the padded length, or no attention mask) they do, so each utterance
records the padded length it was computed at and `TeacherCache.batch` refuses another one. The
pipeline pads an utterance to its bucket's length, a function of its own length, so training
batches built with the same `BucketSpec` always match. `TeacherCache.batch(ids, num_samples)`
returns [B, Tt, V] with Tt = `Teacher.num_frames(num_samples)`, exactly the online teacher's
frame count for that padded length.

Tolerances: float16 rounding errs by at most half a float16 spacing, <= 2^-11 |x| (~4.9e-4 |x|):
for log-probs 9.8e-4 in [-4, -2), 2.0e-3 in [-8, -4), 3.9e-3 in [-16, -8). Hidden states
likewise (relative 4.9e-4). A bfloat16 teacher (`compute_dtype`) differs from the float32 one far
more than that (~1e-2 relative); the metadata records which one made the cache.

Single process: multi-host builds are not split here (run one build per host on disjoint
manifests, or on one host).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import math
import os
import re
import threading
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from distill_jax.data import pipeline

META_FILE = "cache_meta.json"
SHARDS_DIR = "shards"
INDEX_FILE = "index.json"
FORMAT_VERSION = 2  # 2: the teacher is described by `Teacher.describe()`, padding invariance stored
LOG_PROBS_DTYPE = np.float16
HIDDEN_DTYPE = np.float16
REST_DTYPE = np.float32
SHARD_RE = re.compile(r"^(\d{5})$")
_MAX_OPEN_SHARDS = 64  # each memory-mapped field holds a file descriptor

# Fields of cache_meta.json that must match for a cache to be resumed (the others describe the
# corpus and may change between runs).
CORE_FIELDS = ("format_version", "teacher_fingerprint", "teacher_config", "compute_dtype",
                "storage", "vocab", "frame_rate")



# --------------------------------------------------------------------------- fingerprints


def audio_fingerprint(samples: np.ndarray) -> str:
  """sha256 hex digest of decoded samples (dtype and bytes), e.g. `AsrDataset.audio[id]` int16."""
  a = np.ascontiguousarray(samples)
  h = hashlib.sha256(f"{a.dtype.str}|{a.shape}\n".encode())
  h.update(a.reshape(-1).view(np.uint8))
  return h.hexdigest()


def set_fingerprint(ids: Iterable[str], hashes: Iterable[str]) -> str:
  h = hashlib.sha256()
  for uid, ah in sorted(zip(ids, hashes)):
    h.update(f"{uid}\0{ah}\n".encode())
  return h.hexdigest()



# --------------------------------------------------------------------------- top-k

def densify(topk_log_probs: np.ndarray, topk_ids: np.ndarray, rest_log_mass: np.ndarray,
            vocab_size: int) -> np.ndarray:
  """Dense log-probabilities from a top-k summary (numpy, float32).

  Each of the V - k ids outside the top k gets rest_log_mass - log(V - k) (the rest mass spread
  uniformly); the row is then renormalized (log-softmax) so it sums to 1 in float32.

  Args:
    topk_log_probs: [..., k] log-probabilities of the top-k ids (any float dtype).
    topk_ids: [..., k] their ids in [0, V).
    rest_log_mass: [...] log of the mass outside the top k (may be -inf).
    vocab_size: V > k.

  Returns:
    [..., V] float32 normalized log-probabilities.
  """
  vals = np.asarray(topk_log_probs, np.float32)
  ids = np.asarray(topk_ids).astype(np.int64)
  rest = np.asarray(rest_log_mass, np.float32)
  k = vals.shape[-1]
  if ids.shape != vals.shape or rest.shape != vals.shape[:-1]:
    raise ValueError(f"densify: shapes disagree: topk_log_probs {vals.shape}, topk_ids "
                     f"{ids.shape}, rest_log_mass {rest.shape} (expected [..., k], [..., k], "
                     f"[...])")
  if not k < vocab_size:
    raise ValueError(f"densify: k={k} must be smaller than vocab_size={vocab_size}")
  with np.errstate(divide="ignore", invalid="ignore"):
    fill = rest - np.float32(math.log(vocab_size - k))
  dense = np.broadcast_to(fill[..., None], vals.shape[:-1] + (vocab_size,)).copy()
  np.put_along_axis(dense, ids, vals, axis=-1)
  top = np.max(dense, axis=-1, keepdims=True)
  lse = top + np.log(np.sum(np.exp(dense - top), axis=-1, keepdims=True))
  return (dense - lse).astype(np.float32)


# --------------------------------------------------------------------------- metadata


def ids_dtype(vocab_size: int) -> np.dtype:
  return np.dtype(np.uint8 if vocab_size <= 256 else np.int16)


def storage_spec(vocab_size: int, hidden_size: int, top_k: int, layers: tuple[int, ...]) -> dict:
  """The storage section of cache_meta.json: what is stored, in which dtypes."""
  s = {"vocab_size": vocab_size, "top_k": top_k, "layers": list(layers)}
  if top_k:
    s.update(log_probs="topk", topk_log_probs_dtype=np.dtype(LOG_PROBS_DTYPE).name,
             topk_ids_dtype=ids_dtype(vocab_size).name,
             rest_log_mass_dtype=np.dtype(REST_DTYPE).name)
  else:
    s.update(log_probs="full", log_probs_dtype=np.dtype(LOG_PROBS_DTYPE).name)
  if layers:
    s.update(hidden_dtype=np.dtype(HIDDEN_DTYPE).name, hidden_size=hidden_size)
  return s


def json_roundtrip(x: Any) -> Any:
  return json.loads(json.dumps(x))


def read_json(path: str) -> Any:
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def write_json_atomic(path: str, obj: Any) -> None:
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=1, sort_keys=True)
    f.write("\n")
  os.replace(tmp, path)


def describe_mismatch(field: str, have: Any, want: Any) -> str:
  if field == "teacher_fingerprint":
    return f"teacher params fingerprint {have[:16]}... vs {want[:16]}... (another teacher)"
  if field == "storage":
    diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
    return "storage format differs in " + ", ".join(
        f"{k}={have.get(k)!r} vs {want.get(k)!r}" for k in diff)
  if field == "teacher_config":
    diff = sorted(f"{k}={h!r} vs {w!r}" for k, (h, w) in _flat_diff(have, want).items())
    return f"teacher config differs in {', '.join(diff)}"
  return f"{field}={have!r} vs {want!r}"


def _flat_diff(have: Any, want: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
  """{dotted key: (have, want)} where two JSON trees differ."""
  if isinstance(have, dict) and isinstance(want, dict):
    out = {}
    for k in sorted(set(have) | set(want)):
      out.update(_flat_diff(have.get(k), want.get(k), f"{prefix}{k}."))
    return out
  return {} if have == want else {prefix.rstrip("."): (have, want)}



# --------------------------------------------------------------------------- reading


@dataclasses.dataclass(frozen=True)
class _Location:
  shard: int
  offset: int
  num_frames: int
  num_samples: int
  padded_samples: int
  audio_sha256: str


class TeacherCache:
  """Read access to a complete cache (use `open_cache`, which checks it first).

  Attributes:
    path: the cache folder.
    meta: the parsed cache_meta.json.
    top_k: 0 (full distributions) or k.
    layers: stored hidden-state indices.
    vocab_size: V.
    padding_invariant: whether cached frames are independent of the padded length
      (`Teacher.padding_invariant`); if not, `batch` requires each utterance's padded
      length to be the one it was cached at.
  """

  def __init__(self, path: str, meta: dict, index: dict[str, _Location], shard_dirs: list[str],
               num_frames: Callable[[int], int]):
    self.path = path
    self.meta = meta
    storage = meta["storage"]
    self.top_k = int(storage["top_k"])
    self.layers = tuple(int(i) for i in storage["layers"])
    self.vocab_size = int(storage["vocab_size"])
    self.hidden_size = int(storage.get("hidden_size", 0))
    self.padding_invariant = bool(meta["padding_invariant"])
    self._num_frames = num_frames
    self._index = index
    self._shard_dirs = shard_dirs
    self._open: collections.OrderedDict[int, dict[str, np.ndarray]] = collections.OrderedDict()
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return len(self._index)

  def __contains__(self, uid: str) -> bool:
    return uid in self._index

  @property
  def ids(self) -> list[str]:
    return list(self._index)

  def num_frames(self, num_samples: int) -> int:
    """Static teacher frame count Tt for a padded length of `num_samples` samples."""
    return int(self._num_frames(num_samples))

  def _fields(self, shard: int) -> dict[str, np.ndarray]:
    with self._lock:
      if shard in self._open:
        self._open.move_to_end(shard)
        return self._open[shard]
      d = self._shard_dirs[shard]
      names = (["topk_log_probs", "topk_ids", "rest_log_mass"] if self.top_k else ["log_probs"])
      if self.layers:
        names.append("hidden")
      fields = {}
      for name in names:
        p = os.path.join(d, f"{name}.npy")
        try:
          fields[name] = np.load(p, mmap_mode="r")
        except (OSError, ValueError) as e:
          raise ValueError(f"{p}: cannot read teacher cache field {name!r}: {e}") from e
      self._open[shard] = fields
      while len(self._open) > _MAX_OPEN_SHARDS:
        self._open.popitem(last=False)
      return fields

  def _locate(self, uid: str) -> _Location:
    loc = self._index.get(uid)
    if loc is None:
      raise KeyError(f"utterance {uid!r} is not in the teacher cache {self.path} "
                     f"({len(self._index)} utterances); rebuild it with build_cache over a "
                     f"dataset that holds it")
    return loc

  def utterance(self, uid: str) -> dict[str, Any]:
    """One utterance's valid frames: log_probs [n, V] float32 (densified for top-k), hidden
    [len(layers), n, D] float16 (None without layers), num_frames n, num_samples."""
    loc = self._locate(uid)
    f = self._fields(loc.shard)
    sl = slice(loc.offset, loc.offset + loc.num_frames)
    if self.top_k:
      log_probs = densify(f["topk_log_probs"][sl], f["topk_ids"][sl], f["rest_log_mass"][sl],
                          self.vocab_size)
    else:
      log_probs = np.asarray(f["log_probs"][sl], np.float32)
    hidden = np.swapaxes(np.array(f["hidden"][sl]), 0, 1) if self.layers else None
    return {"log_probs": log_probs, "hidden": hidden, "num_frames": loc.num_frames,
            "num_samples": loc.num_samples}

  def batch(self, ids: Sequence[str], num_samples: int,
            hidden_dtype: Any = np.float32) -> dict[str, np.ndarray]:
    """Teacher arrays for a pipeline batch, rows in the order of `ids`.

    Args:
      ids: the batch's utterance ids (`batch["ids"]`); "" marks a filler row (all padding).
      num_samples: S, the batch's padded sample length (`batch["waveform"].shape[1]`).
      hidden_dtype: dtype of `teacher_hidden` (stored as float16).

    Returns:
      dict of numpy arrays, Tt = `num_frames(S)` (what the online teacher gives for S):
        teacher_log_probs: [B, Tt, V] float32, normalized; padded frames hold log(1 / V).
        teacher_paddings: [B, Tt] float32, 1.0 marks padding (= the online frame_paddings).
        teacher_hidden: [B, len(layers), Tt, D] (only when the cache stores layers), 0 at
          padded frames; batch-major like every batch field (the step splits rows over
          devices).

    Raises:
      KeyError: an id not in the cache (naming it and the cache path).
      ValueError: an utterance longer than S allows, or (for a padding-dependent teacher)
        cached at another padded length.
    """
    t = self.num_frames(num_samples)
    b = len(ids)
    log_probs = np.full((b, t, self.vocab_size), -math.log(self.vocab_size), np.float32)
    paddings = np.ones((b, t), np.float32)
    hidden = (np.zeros((b, len(self.layers), t, self.hidden_size), hidden_dtype)
              if self.layers else None)
    for r, uid in enumerate(ids):
      uid = str(uid)
      if not uid:
        continue
      loc = self._locate(uid)
      n = loc.num_frames
      if loc.num_samples > num_samples:
        raise ValueError(f"utterance {uid!r} has {loc.num_samples} samples, more than the "
                         f"batch's padded length {num_samples} (teacher cache {self.path})")
      if not self.padding_invariant and loc.padded_samples != num_samples:
        raise ValueError(
            f"utterance {uid!r} was cached at padded length {loc.padded_samples} but the batch "
            f"pads it to {num_samples}; this teacher's frames depend on padding (e.g. a "
            f"group-norm wav2vec2), so use the BucketSpec the cache was built with "
            f"(teacher cache {self.path})")
      u = self.utterance(uid)
      log_probs[r, :n] = u["log_probs"]
      paddings[r, :n] = 0.0
      if hidden is not None:
        hidden[r, :, :n] = u["hidden"]
    out = {"teacher_log_probs": log_probs, "teacher_paddings": paddings}
    if hidden is not None:
      out["teacher_hidden"] = hidden
    return out

  def add_to_batch(self, batch: Mapping[str, np.ndarray], **kw) -> dict[str, np.ndarray]:
    """`batch` (a pipeline batch) plus the `batch(...)` arrays for its ids and padded length."""
    return {**batch, **self.batch(batch["ids"], batch["waveform"].shape[1], **kw)}


def _load_index(path: str, meta: dict) -> tuple[dict[str, _Location], list[str]]:
  root = os.path.join(path, SHARDS_DIR)
  names = sorted(n for n in (os.listdir(root) if os.path.isdir(root) else [])
                 if SHARD_RE.match(n))
  expected = [f"{j:05d}" for j in range(int(meta.get("num_shards", 0)))]
  if names != expected:
    missing = sorted(set(expected) - set(names))
    extra = sorted(set(names) - set(expected))
    raise ValueError(f"{root}: shard folders do not match {META_FILE} (num_shards="
                     f"{meta.get('num_shards')}): missing {missing[:10]}, unexpected "
                     f"{extra[:10]}; re-run build_cache")
  index: dict[str, _Location] = {}
  dirs = []
  for j, name in enumerate(names):
    d = os.path.join(root, name)
    dirs.append(d)
    p = os.path.join(d, INDEX_FILE)
    try:
      idx = read_json(p)
    except (OSError, ValueError) as e:
      raise ValueError(f"{p}: cannot read shard index: {e}") from e
    for uid, off, n, ns, ps, ah in zip(idx["ids"], idx["frame_offsets"], idx["num_frames"],
                                       idx["num_samples"], idx["padded_samples"],
                                       idx["audio_sha256"]):
      if uid in index:
        raise ValueError(f"{p}: utterance {uid!r} is also in shard {index[uid].shard:05d}")
      index[uid] = _Location(j, int(off), int(n), int(ns), int(ps), ah)
  return index, dirs


def open_cache(path: str, expected_teacher_fingerprint: str | None, *,
               top_k: int | None = None, layers: Sequence[int] | None = None,
               vocab: Mapping[str, int] | None = None,
               description: Mapping[str, Any] | None = None, compute_dtype: str | None = None,
               dataset: pipeline.AsrDataset | None = None,
               num_frames: Callable[[int], int]) -> TeacherCache:
  """Opens a complete cache after checking it matches what the caller expects.

  Args:
    path: cache folder written by `build_cache`.
    expected_teacher_fingerprint: `models.teacher.params_fingerprint(teacher_params)`; None
      skips the check.
    top_k, layers, vocab, description (`Teacher.describe()`), compute_dtype ('float32', ...):
      when given, must equal what the cache stores.
    num_frames: the teacher's frame count for a padded length (`Teacher.num_frames`).
    dataset: when given, every one of its utterances must be cached with the same audio
      (sha256 of its decoded int16 samples).

  Raises:
    FileNotFoundError: no cache_meta.json in `path`.
    ValueError: an incomplete cache, or a mismatch, named: another teacher (fingerprint),
      another storage format, vocabulary or config, an utterance whose audio differs (its id),
      utterances of `dataset` missing from the cache.
  """
  path = os.path.abspath(path)
  meta_path = os.path.join(path, META_FILE)
  if not os.path.isfile(meta_path):
    raise FileNotFoundError(f"{path}: no {META_FILE}; not a teacher cache (build it with "
                            f"build_cache)")
  meta = read_json(meta_path)
  if meta.get("format_version") != FORMAT_VERSION:
    raise ValueError(f"{meta_path}: format_version={meta.get('format_version')!r}, this code "
                     f"reads {FORMAT_VERSION}; rebuild the cache")
  if not meta.get("complete", False):
    raise ValueError(f"{meta_path}: the cache is incomplete (build_cache was interrupted or is "
                     f"running); re-run build_cache to complete it")
  problems = []
  have = meta["teacher_fingerprint"]
  if expected_teacher_fingerprint is not None and have != expected_teacher_fingerprint:
    problems.append(f"it was made by another teacher: params fingerprint {have} (teacher_path "
                    f"{meta.get('teacher_path')!r}), expected {expected_teacher_fingerprint}")
  storage = meta["storage"]
  if top_k is not None and int(storage["top_k"]) != int(top_k):
    problems.append(f"it stores top_k={storage['top_k']}, expected top_k={top_k}")
  if layers is not None and list(storage["layers"]) != [int(i) for i in layers]:
    problems.append(f"it stores layers={storage['layers']}, expected layers={list(layers)}")
  if compute_dtype is not None and meta["compute_dtype"] != compute_dtype:
    problems.append(f"it was computed in {meta['compute_dtype']}, expected {compute_dtype}")
  if description is not None and meta["teacher_config"] != json_roundtrip(description):
    problems.append(describe_mismatch("teacher_config", meta["teacher_config"],
                                      json_roundtrip(description)))
  if vocab is not None:
    if meta.get("vocab") is None:
      problems.append("it records no vocabulary (built without a tokenizer), expected one")
    elif dict(meta["vocab"]) != dict(vocab):
      only_c = sorted(set(meta["vocab"].items()) - set(vocab.items()))
      only_e = sorted(set(vocab.items()) - set(meta["vocab"].items()))
      problems.append(f"its vocabulary differs: cache-only entries {only_c[:10]}, expected-only "
                      f"entries {only_e[:10]}")
  if problems:
    raise ValueError(f"teacher cache {path} does not match: " + "; ".join(problems))

  index, dirs = _load_index(path, meta)
  if dataset is not None:
    missing = [ex.id for ex in dataset.examples if ex.id not in index]
    if missing:
      raise ValueError(f"teacher cache {path} lacks {len(missing)} of the dataset's "
                       f"{len(dataset)} utterances (first: {missing[:5]}); re-run build_cache "
                       f"on this dataset")
    changed = [ex.id for ex in dataset.examples
               if index[ex.id].audio_sha256 != audio_fingerprint(dataset.audio[ex.id])]
    if changed:
      raise ValueError(f"teacher cache {path} was made from other audio: utterance "
                       f"{changed[0]!r} has a different audio hash (decoded samples)"
                       + (f", and {len(changed) - 1} more: {changed[1:6]}" if len(changed) > 1
                          else "") + "; re-run build_cache to refresh those shards")
  return TeacherCache(path, meta, index, dirs, num_frames)


def cache_stats(path: str) -> dict[str, Any]:
  """Disk use of a cache: bytes on disk (all files), audio hours, bytes per hour of audio.

  Returns:
    dict: path, disk_bytes, bytes_by_field {log_probs|topk_*|rest_log_mass|hidden|index: bytes},
    num_utterances, num_shards, num_frames, audio_hours, bytes_per_audio_hour, top_k, layers.
  """
  path = os.path.abspath(path)
  meta_path = os.path.join(path, META_FILE)
  if not os.path.isfile(meta_path):
    raise FileNotFoundError(f"{path}: no {META_FILE}; not a teacher cache")
  meta = read_json(meta_path)
  disk = 0
  by_field: dict[str, int] = collections.Counter()
  for root, _, files in os.walk(path):
    for name in files:
      size = os.path.getsize(os.path.join(root, name))
      disk += size
      field = name[:-4] if name.endswith(".npy") else (
          "index" if name == INDEX_FILE else "meta")
      by_field[field] += size
  index, _ = _load_index(path, meta)
  samples = sum(loc.num_samples for loc in index.values())
  rate = meta["frame_rate"]["sample_rate"]
  hours = samples / rate / 3600
  return {
      "path": path, "disk_bytes": disk, "bytes_by_field": dict(by_field),
      "num_utterances": len(index), "num_shards": len(set(loc.shard for loc in index.values())),
      "num_frames": sum(loc.num_frames for loc in index.values()), "audio_hours": hours,
      "bytes_per_audio_hour": disk / hours if hours > 0 else float("nan"),
      "top_k": meta["storage"]["top_k"], "layers": meta["storage"]["layers"],
  }
