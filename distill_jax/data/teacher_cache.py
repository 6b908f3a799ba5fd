"""Offline teacher cache: run the frozen wav2vec2 teacher once, store what distillation reads.

A distillation step needs, per utterance, the teacher's log-probabilities at temperature 1 (the
KL term tempers both sides itself, see `losses/distill.py`) and optionally some hidden states.
`build_cache` runs the teacher over an `AsrDataset` once, in the order and with the padded
shapes of `pipeline.eval_batches`, and writes them to disk; `open_cache` checks that a cache
belongs to the teacher, storage format and audio at hand, and `TeacherCache.batch` returns the
padded arrays the online teacher would have produced for a pipeline batch, so the KD step reads
them instead of running the teacher.

What the teacher gives (`make_teacher_fn`, shared by the offline and online paths):
waveform [B, S] -> `normalize_waveform` (when `config.do_normalize`) -> `Wav2Vec2ForCTC` ->
`log_softmax` in float32. Only valid frames are stored (their count is the conv-stack length of
the utterance's samples, `wav2vec2.conv_output_lengths`).

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
  cache_meta.json        teacher (path, `params_fingerprint`, config, compute dtype), storage
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

Identity checks. `params_fingerprint` is the sha256 over every param leaf (key path, dtype,
shape, bytes; leaves sorted by key path), so a cache is tied to the exact weights, not to a file
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
returns [B, Tt, V] with Tt = `wav2vec2.num_frames(config, num_samples)`, exactly the online
teacher's frame count for that padded length.

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
import functools
import hashlib
import json
import logging
import math
import os
import re
import shutil
import threading
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from distill_jax import text as text_lib
from distill_jax.data import pipeline
from distill_jax.models import wav2vec2 as w2v

META_FILE = "cache_meta.json"
SHARDS_DIR = "shards"
INDEX_FILE = "index.json"
FORMAT_VERSION = 1
LOG_PROBS_DTYPE = np.float16
HIDDEN_DTYPE = np.float16
REST_DTYPE = np.float32
_SHARD_RE = re.compile(r"^(\d{5})$")
_MAX_OPEN_SHARDS = 64  # each memory-mapped field holds a file descriptor

# Fields of cache_meta.json that must match for a cache to be resumed (the others describe the
# corpus and may change between runs).
_CORE_FIELDS = ("format_version", "teacher_fingerprint", "teacher_config", "compute_dtype",
                "storage", "vocab", "frame_rate")


# --------------------------------------------------------------------------- fingerprints


def params_fingerprint(params: Any) -> str:
  """sha256 hex digest of a params tree: every leaf's key path, dtype, shape and bytes.

  Leaves are taken in the order of their sorted key paths (`jax.tree_util.keystr`), so the
  digest depends on the values only, not on the container types or on numpy vs jax arrays.
  """
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  items = sorted(((jax.tree_util.keystr(p), leaf) for p, leaf in leaves), key=lambda x: x[0])
  h = hashlib.sha256()
  for key, leaf in items:
    a = np.ascontiguousarray(np.asarray(leaf))
    h.update(f"{key}|{a.dtype.str}|{a.shape}\n".encode())
    h.update(a.reshape(-1).view(np.uint8))
  return h.hexdigest()


def audio_fingerprint(samples: np.ndarray) -> str:
  """sha256 hex digest of decoded samples (dtype and bytes), e.g. `AsrDataset.audio[id]` int16."""
  a = np.ascontiguousarray(samples)
  h = hashlib.sha256(f"{a.dtype.str}|{a.shape}\n".encode())
  h.update(a.reshape(-1).view(np.uint8))
  return h.hexdigest()


def _set_fingerprint(ids: Iterable[str], hashes: Iterable[str]) -> str:
  h = hashlib.sha256()
  for uid, ah in sorted(zip(ids, hashes)):
    h.update(f"{uid}\0{ah}\n".encode())
  return h.hexdigest()


# --------------------------------------------------------------------------- teacher function


def check_layers(config: w2v.Wav2Vec2Config, layers: Sequence[int]) -> tuple[int, ...]:
  """Validates hidden-state indices (0..num_hidden_layers, no repeats); returns them as a tuple."""
  out = []
  for i in layers:
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
      raise ValueError(f"layers: {i!r} is not an integer layer index")
    if not 0 <= int(i) <= config.num_hidden_layers:
      raise ValueError(f"layers: layer {int(i)} does not exist; the teacher's hidden states have "
                       f"indices 0..{config.num_hidden_layers} (0 = the input embedding)")
    if int(i) in out:
      raise ValueError(f"layers: layer {int(i)} appears more than once in {tuple(layers)}")
    out.append(int(i))
  return tuple(out)


def _check_top_k(top_k: Any, vocab_size: int) -> int:
  if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 0:
    raise ValueError(f"top_k must be a non-negative integer, got {top_k!r}")
  if top_k >= vocab_size:
    raise ValueError(f"top_k={top_k} >= vocab_size={vocab_size}: use top_k=0 to store the full "
                     f"distribution")
  return int(top_k)


def make_teacher_fn(config: w2v.Wav2Vec2Config, layers: Sequence[int] = (), top_k: int = 0,
                    dtype: Any = jnp.float32) -> Callable[..., dict[str, jax.Array]]:
  """The jitted teacher forward used by `build_cache`: `wav2vec2.make_teacher_fn` (which the
  online distillation step calls) plus the top-k reduction.

  `fn(params, waveform [B, S], paddings [B, S])` normalizes the waveform when
  `config.do_normalize`, runs `Wav2Vec2ForCTC(config, dtype)` and returns (stop_gradient) a dict:
    frame_paddings: [B, Tt] float32, 1.0 marks padding, Tt = `wav2vec2.num_frames(config, S)`.
    log_probs: [B, Tt, V] float32 log_softmax of the logits (when top_k == 0).
    topk_log_probs [B, Tt, k] float32 descending, topk_ids [B, Tt, k] int32, rest_log_mass
      [B, Tt] float32 = log of the probability outside the top k (when top_k > 0).
    hidden: [len(layers), B, Tt, D] float32 (when layers).
  Cached per (config, layers, top_k, dtype), so repeated builds reuse the compiled programs.
  """
  return _teacher_fn(config, check_layers(config, layers), _check_top_k(top_k, config.vocab_size),
                     jnp.dtype(dtype))


@functools.lru_cache(maxsize=16)
def _teacher_fn(config: w2v.Wav2Vec2Config, layers: tuple[int, ...], top_k: int,
                dtype: np.dtype) -> Callable[..., dict[str, jax.Array]]:
  teacher = w2v.make_teacher_fn(w2v.Wav2Vec2ForCTC(config, dtype=dtype), layers)

  def fn(params, waveform, paddings):
    out = teacher(params, jnp.asarray(waveform, jnp.float32), jnp.asarray(paddings, jnp.float32))
    log_probs = out["log_probs"]
    res = {"frame_paddings": out["paddings"]}
    if top_k:
      vals, ids = jax.lax.top_k(log_probs, top_k)
      in_top = jnp.sum(jax.nn.one_hot(ids, config.vocab_size, dtype=jnp.int32), axis=-2) > 0
      res["topk_log_probs"] = vals
      res["topk_ids"] = ids.astype(jnp.int32)
      res["rest_log_mass"] = jax.nn.logsumexp(jnp.where(in_top, -jnp.inf, log_probs), axis=-1)
    else:
      res["log_probs"] = log_probs
    if layers:
      res["hidden"] = out["hidden"]
    return jax.lax.stop_gradient(res)

  return jax.jit(fn)


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


def _ids_dtype(vocab_size: int) -> np.dtype:
  return np.dtype(np.uint8 if vocab_size <= 256 else np.int16)


def _storage(config: w2v.Wav2Vec2Config, top_k: int, layers: tuple[int, ...]) -> dict:
  s = {"vocab_size": config.vocab_size, "top_k": top_k, "layers": list(layers)}
  if top_k:
    s.update(log_probs="topk", topk_log_probs_dtype=np.dtype(LOG_PROBS_DTYPE).name,
             topk_ids_dtype=_ids_dtype(config.vocab_size).name,
             rest_log_mass_dtype=np.dtype(REST_DTYPE).name)
  else:
    s.update(log_probs="full", log_probs_dtype=np.dtype(LOG_PROBS_DTYPE).name)
  if layers:
    s.update(hidden_dtype=np.dtype(HIDDEN_DTYPE).name, hidden_size=config.hidden_size)
  return s


def _frame_rate(config: w2v.Wav2Vec2Config) -> dict:
  hop = config.frame_rate_samples
  return {"sample_rate": config.sampling_rate, "samples_per_frame": hop,
          "frame_seconds": hop / config.sampling_rate, "conv_kernel": list(config.conv_kernel),
          "conv_stride": list(config.conv_stride)}


def _teacher_config(config: w2v.Wav2Vec2Config) -> dict:
  return {"config": config.to_hf_dict(), "preprocessor": config.preprocessor_dict()}


def _json_roundtrip(x: Any) -> Any:
  return json.loads(json.dumps(x))


def _read_json(path: str) -> Any:
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _write_json_atomic(path: str, obj: Any) -> None:
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=1, sort_keys=True)
    f.write("\n")
  os.replace(tmp, path)


def _describe_mismatch(field: str, have: Any, want: Any) -> str:
  if field == "teacher_fingerprint":
    return f"teacher params fingerprint {have[:16]}... vs {want[:16]}... (another teacher)"
  if field == "storage":
    diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
    return "storage format differs in " + ", ".join(
        f"{k}={have.get(k)!r} vs {want.get(k)!r}" for k in diff)
  if field == "teacher_config":
    diff = sorted(f"{part}.{k}={have[part].get(k)!r} vs {want[part].get(k)!r}"
                  for part in ("config", "preprocessor")
                  for k in set(have[part]) | set(want[part])
                  if have[part].get(k) != want[part].get(k))
    return f"teacher config differs in {', '.join(diff)}"
  return f"{field}={have!r} vs {want!r}"


# --------------------------------------------------------------------------- writing


@dataclasses.dataclass(frozen=True)
class _Planned:
  """One utterance of the build plan."""
  id: str
  example: int  # index into dataset.examples
  num_samples: int
  padded_samples: int
  num_frames: int
  audio_sha256: str


class _ShardWriter:
  """Fills the preallocated fields of one shard in a temporary folder, then renames it."""

  def __init__(self, final_dir: str, items: Sequence[_Planned], config: w2v.Wav2Vec2Config,
               top_k: int, layers: tuple[int, ...]):
    self.final_dir = final_dir
    self.tmp_dir = f"{final_dir}.tmp-{os.getpid()}"
    self.items = list(items)
    self.pos = {it.id: j for j, it in enumerate(self.items)}
    counts = [it.num_frames for it in self.items]
    self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    n = int(self.offsets[-1])
    if os.path.exists(self.tmp_dir):
      shutil.rmtree(self.tmp_dir)
    os.makedirs(self.tmp_dir)
    mm = functools.partial(np.lib.format.open_memmap, mode="w+")
    join = functools.partial(os.path.join, self.tmp_dir)
    v = config.vocab_size
    self.fields: dict[str, np.ndarray] = {}
    if top_k:
      self.fields["topk_log_probs"] = mm(join("topk_log_probs.npy"), dtype=LOG_PROBS_DTYPE,
                                         shape=(n, top_k))
      self.fields["topk_ids"] = mm(join("topk_ids.npy"), dtype=_ids_dtype(v), shape=(n, top_k))
      self.fields["rest_log_mass"] = mm(join("rest_log_mass.npy"), dtype=REST_DTYPE, shape=(n,))
    else:
      self.fields["log_probs"] = mm(join("log_probs.npy"), dtype=LOG_PROBS_DTYPE, shape=(n, v))
    if layers:
      self.fields["hidden"] = mm(join("hidden.npy"), dtype=HIDDEN_DTYPE,
                                 shape=(n, len(layers), config.hidden_size))
    self.remaining = set(self.pos)

  def add(self, uid: str, arrays: Mapping[str, np.ndarray]) -> None:
    """arrays: per-utterance [n, ...] host arrays (hidden as [n, len(layers), D])."""
    j = self.pos[uid]
    a, b = self.offsets[j], self.offsets[j + 1]
    for name, dst in self.fields.items():
      src = arrays[name]
      cast = src.astype(dst.dtype)
      if cast.dtype.kind == "f":
        finite = np.isfinite(cast) if name != "rest_log_mass" else ~np.isnan(cast)
        if not np.all(finite):
          raise ValueError(f"utterance {uid!r}: teacher {name} has non-finite values after the "
                           f"cast to {dst.dtype} (max |x| = {np.nanmax(np.abs(src)):.4g})")
      dst[a:b] = cast
    self.remaining.discard(uid)

  def finish(self) -> None:
    for arr in self.fields.values():
      arr.flush()
    self.fields.clear()
    index = {
        "ids": [it.id for it in self.items],
        "frame_offsets": [int(o) for o in self.offsets[:-1]],
        "num_frames": [it.num_frames for it in self.items],
        "num_samples": [it.num_samples for it in self.items],
        "padded_samples": [it.padded_samples for it in self.items],
        "audio_sha256": [it.audio_sha256 for it in self.items],
    }
    _write_json_atomic(os.path.join(self.tmp_dir, INDEX_FILE), index)
    if os.path.exists(self.final_dir):  # a stale shard being rebuilt: move it out of the way
      trash = f"{self.final_dir}.old-{os.getpid()}"
      os.rename(self.final_dir, trash)
      os.rename(self.tmp_dir, self.final_dir)
      shutil.rmtree(trash)
    else:
      os.rename(self.tmp_dir, self.final_dir)


def _shard_matches(shard_dir: str, items: Sequence[_Planned]) -> bool:
  path = os.path.join(shard_dir, INDEX_FILE)
  if not os.path.isfile(path):
    return False
  try:
    index = _read_json(path)
  except (OSError, ValueError):
    return False
  return (index.get("ids") == [it.id for it in items]
          and index.get("audio_sha256") == [it.audio_sha256 for it in items]
          and index.get("padded_samples") == [it.padded_samples for it in items]
          and index.get("num_frames") == [it.num_frames for it in items])


def _plan(config: w2v.Wav2Vec2Config, dataset: pipeline.AsrDataset
          ) -> tuple[list[tuple[int, list[int]]], list[_Planned]]:
  """eval_batches' plan (same seed/epoch/flags) and the utterances in its order."""
  plan = dataset.epoch_plan(0, 0, shuffle=False, drop_remainder=False)
  items = []
  for bucket, indices in plan:
    padded = dataset.buckets.bucket_samples(bucket)
    for i in indices:
      ex = dataset.examples[i]
      items.append(_Planned(ex.id, i, ex.num_samples, padded,
                            w2v.num_frames(config, ex.num_samples),
                            audio_fingerprint(dataset.audio[ex.id])))
  return plan, items


def build_cache(config: w2v.Wav2Vec2Config, params: Any, dataset: pipeline.AsrDataset,
                out_dir: str, *, top_k: int = 0, layers: Sequence[int] = (),
                shard_size: int = 256, compute_dtype: Any = jnp.float32,
                tokenizer: text_lib.CharTokenizer | None = None, teacher_path: str | None = None,
                manifest_path: str | None = None, overwrite: bool = False,
                progress: bool = True) -> dict[str, Any]:
  """Runs the teacher over `dataset` and writes (or completes) a cache in `out_dir`.

  Batches are those of `pipeline.eval_batches(dataset)` (same plan, same padded shapes, one
  compiled program per bucket); batches whose utterances all lie in complete shards are not
  assembled or run. The next batch is dispatched before the previous one is written.

  Args:
    config, params: the teacher (e.g. from `convert.hf_wav2vec2.load_teacher`).
    dataset: the corpus, from `pipeline.prepare_dataset`.
    out_dir: cache folder (created).
    top_k: 0 stores the full float16 distribution; k > 0 the top-k summary.
    layers: hidden-state indices to store (0..num_hidden_layers), in this order.
    shard_size: utterances per shard (memory stays bounded: fields are memory-mapped).
    compute_dtype: teacher compute dtype (jnp.bfloat16 is faster on accelerators; recorded).
    tokenizer: its vocabulary is recorded (and checked by `open_cache(vocab=...)`).
    teacher_path, manifest_path: recorded in the metadata.
    overwrite: replace a cache built with another teacher or storage format (else an error).
    progress: tqdm bar over utterances.

  Returns:
    dict: out_dir, num_utterances, num_shards, shards_written, shards_skipped, audio_hours,
    seconds (wall time), compiled_shapes.

  Raises:
    ValueError: bad top_k/layers/shard_size, an existing cache in `out_dir` with another teacher
      or format (naming the difference; use overwrite=True), non-finite teacher outputs (naming
      the utterance), a tokenizer larger than the teacher's vocabulary.
  """
  start = time.time()
  layers = check_layers(config, layers)
  top_k = _check_top_k(top_k, config.vocab_size)
  if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
    raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}")
  if tokenizer is not None and tokenizer.vocab_size > config.vocab_size:
    raise ValueError(f"tokenizer has {tokenizer.vocab_size} tokens but the teacher's "
                     f"vocab_size is {config.vocab_size}")
  out_dir = os.path.abspath(out_dir)
  shards_root = os.path.join(out_dir, SHARDS_DIR)
  meta_path = os.path.join(out_dir, META_FILE)

  core = _json_roundtrip({
      "format_version": FORMAT_VERSION,
      "teacher_fingerprint": params_fingerprint(params),
      "teacher_config": _teacher_config(config),
      "compute_dtype": jnp.dtype(compute_dtype).name,
      "storage": _storage(config, top_k, layers),
      "vocab": dict(tokenizer.vocab) if tokenizer is not None else None,
      "frame_rate": _frame_rate(config),
  })
  old = None
  if not os.path.isfile(meta_path):  # shards without metadata cannot be trusted
    shutil.rmtree(shards_root, ignore_errors=True)
  else:
    old = _read_json(meta_path)
    diffs = [_describe_mismatch(f, old.get(f), core[f]) for f in _CORE_FIELDS
             if old.get(f) != core[f]]
    if diffs and not overwrite:
      raise ValueError(f"{meta_path}: the existing cache does not match this build: "
                       f"{'; '.join(diffs)}. Pass overwrite=True to replace it, or choose "
                       f"another out_dir")
    if diffs:
      logging.info("teacher cache %s: overwriting (%s)", out_dir, "; ".join(diffs))
      shutil.rmtree(shards_root, ignore_errors=True)
      os.remove(meta_path)
      old = None
  os.makedirs(shards_root, exist_ok=True)
  for name in os.listdir(shards_root):  # leftovers of an interrupted run
    if ".tmp-" in name or ".old-" in name:
      shutil.rmtree(os.path.join(shards_root, name), ignore_errors=True)

  plan, items = _plan(config, dataset)
  shards = [items[i:i + shard_size] for i in range(0, len(items), shard_size)]
  shard_of = {it.id: j for j, shard in enumerate(shards) for it in shard}
  dirs = [os.path.join(shards_root, f"{j:05d}") for j in range(len(shards))]
  todo = {j for j, shard in enumerate(shards) if not _shard_matches(dirs[j], shard)}
  meta = dict(core, teacher_path=teacher_path, manifest_path=manifest_path,
              audio_sha256=_set_fingerprint([it.id for it in items],
                                            [it.audio_sha256 for it in items]),
              num_utterances=len(items), num_shards=len(shards), shard_size=shard_size,
              bucket_boundaries=list(dataset.buckets.boundaries),
              audio_seconds=sum(it.num_samples for it in items) / config.sampling_rate,
              created_unix_time=(old or {}).get("created_unix_time", int(time.time())))
  stale = [n for n in os.listdir(shards_root)
           if _SHARD_RE.match(n) and int(n) >= len(shards)]
  if old is None or ((todo or stale) and old.get("complete", False)):
    # Until the shards are complete, the metadata says so (open_cache refuses the cache).
    _write_json_atomic(meta_path, dict(meta, complete=False))

  fn = make_teacher_fn(config, layers, top_k, compute_dtype)
  if todo:  # once, not per batch (numpy params would be copied to the device at every call)
    params = jax.device_put(params)
  writers: dict[int, _ShardWriter] = {}
  shapes: set[tuple[int, ...]] = set()
  bar = tqdm.tqdm(total=sum(len(shards[j]) for j in todo), disable=not progress,
                  desc="teacher cache", unit="utt")

  def handle(batch, out):
    out = jax.device_get(out)
    valid = (np.asarray(out["frame_paddings"]) < 0.5).sum(axis=1)
    for r, uid in enumerate(batch["ids"]):
      uid = str(uid)
      if not uid or shard_of[uid] not in todo:
        continue
      j = shard_of[uid]
      if j not in writers:
        writers[j] = _ShardWriter(dirs[j], shards[j], config, top_k, layers)
      item = shards[j][writers[j].pos[uid]]
      n = item.num_frames
      if int(valid[r]) != n:
        raise RuntimeError(f"utterance {uid!r}: the teacher returned {int(valid[r])} valid frames "
                           f"for {item.num_samples} samples, the conv formula gives {n}")
      arrays = {name: np.asarray(out[name][r, :n]) for name in
                ("log_probs", "topk_log_probs", "topk_ids", "rest_log_mass") if name in out}
      if layers:
        arrays["hidden"] = np.swapaxes(np.asarray(out["hidden"][:, r, :n]), 0, 1)
      writers[j].add(uid, arrays)
      bar.update(1)
      if not writers[j].remaining:
        writers.pop(j).finish()

  pending = None
  for bucket, indices in plan:
    if not any(shard_of[dataset.examples[i].id] in todo for i in indices):
      continue
    batch = dataset.assemble(bucket, indices)
    shape = tuple(batch["waveform"].shape)
    if shape not in shapes:
      shapes.add(shape)
      logging.info("teacher cache: compiling for input shape %s (%d shapes so far)", shape,
                   len(shapes))
    out = fn(params, batch["waveform"], batch["wave_paddings"])  # async dispatch
    if pending is not None:
      handle(*pending)
    pending = (batch, out)
  if pending is not None:
    handle(*pending)
  bar.close()
  if writers:  # cannot happen: every planned utterance is in exactly one batch
    raise RuntimeError(f"teacher cache: shards {sorted(writers)} were left incomplete")

  for name in stale:  # shards no longer part of the plan
    shutil.rmtree(os.path.join(shards_root, name))
  final = _json_roundtrip(dict(meta, complete=True))
  if _read_json(meta_path) != final:  # an unchanged cache is left untouched
    _write_json_atomic(meta_path, final)
  return {"out_dir": out_dir, "num_utterances": len(items), "num_shards": len(shards),
          "shards_written": len(todo), "shards_skipped": len(shards) - len(todo),
          "audio_hours": meta["audio_seconds"] / 3600, "seconds": time.time() - start,
          "compiled_shapes": sorted(shapes)}


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
    config: the teacher's `Wav2Vec2Config` (rebuilt from the metadata).
    top_k: 0 (full distributions) or k.
    layers: stored hidden-state indices.
    vocab_size: V.
    padding_invariant: whether cached frames are independent of the padded length (stable
      layer norm family with attention mask); if not, `batch` requires each utterance's padded
      length to be the one it was cached at.
  """

  def __init__(self, path: str, meta: dict, index: dict[str, _Location], shard_dirs: list[str]):
    self.path = path
    self.meta = meta
    tc = meta["teacher_config"]
    self.config = w2v.Wav2Vec2Config.from_hf_dict(tc["config"], tc["preprocessor"])
    storage = meta["storage"]
    self.top_k = int(storage["top_k"])
    self.layers = tuple(int(i) for i in storage["layers"])
    self.vocab_size = int(storage["vocab_size"])
    self.hidden_size = int(storage.get("hidden_size", self.config.hidden_size))
    self.padding_invariant = (self.config.attention_mask
                              and self.config.feat_extract_norm == "layer")
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
    return w2v.num_frames(self.config, num_samples)

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
            f"pads it to {num_samples}; this teacher (feat_extract_norm="
            f"{self.config.feat_extract_norm!r}, attention mask {self.config.attention_mask}) "
            f"depends on padding, so use the BucketSpec the cache was built with "
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
                 if _SHARD_RE.match(n))
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
      idx = _read_json(p)
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
               config: w2v.Wav2Vec2Config | None = None, compute_dtype: Any = None,
               dataset: pipeline.AsrDataset | None = None) -> TeacherCache:
  """Opens a complete cache after checking it matches what the caller expects.

  Args:
    path: cache folder written by `build_cache`.
    expected_teacher_fingerprint: `params_fingerprint(teacher_params)`; None skips the check.
    top_k, layers, vocab, config, compute_dtype: when given, must equal what the cache stores.
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
  meta = _read_json(meta_path)
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
  if compute_dtype is not None and meta["compute_dtype"] != jnp.dtype(compute_dtype).name:
    problems.append(f"it was computed in {meta['compute_dtype']}, expected "
                    f"{jnp.dtype(compute_dtype).name}")
  if config is not None and meta["teacher_config"] != _json_roundtrip(_teacher_config(config)):
    problems.append(_describe_mismatch("teacher_config", meta["teacher_config"],
                                       _json_roundtrip(_teacher_config(config))))
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
  return TeacherCache(path, meta, index, dirs)


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
  meta = _read_json(meta_path)
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
