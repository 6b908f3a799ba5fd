"""Writing the offline teacher cache: run a frozen teacher once over a dataset.

`build_cache(teacher, dataset, out_dir)` runs `teacher.forward` (`models/teacher.py`: any
family) over an `AsrDataset` once, in the order and with the padded shapes of
`pipeline.eval_batches`, and writes what distillation reads (format and reader:
`data/teacher_cache.py`). Only valid frames are stored (`teacher.num_frames` of the utterance's
samples). With `top_k` the step's forward keeps the k largest log-probs and the log of the rest
mass (`data.teacher_cache.densify` rebuilds the distribution).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import shutil
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from distill_jax import text as text_lib
from distill_jax.data import pipeline
from distill_jax.data import teacher_cache as tc
from distill_jax.models import teacher as teacher_lib


def _check_top_k(top_k: Any, vocab_size: int) -> int:
  if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 0:
    raise ValueError(f"top_k must be a non-negative integer, got {top_k!r}")
  if top_k >= vocab_size:
    raise ValueError(f"top_k={top_k} >= vocab_size={vocab_size}: use top_k=0 to store the full "
                     f"distribution")
  return int(top_k)


@functools.lru_cache(maxsize=16)  # repeated builds with one teacher reuse the compiled programs
def make_cache_fn(teacher: teacher_lib.Teacher, layers: tuple[int, ...],
                  top_k: int) -> Callable[..., dict[str, jax.Array]]:
  """The jitted forward `build_cache` runs: `teacher.forward` plus the top-k reduction.

  `fn(params, waveform [B, S], paddings [B, S])` returns (stop_gradient) a dict:
    frame_paddings: [B, Tt] float32, 1.0 marks padding, Tt = `teacher.num_frames(S)`.
    log_probs: [B, Tt, V] float32 (when top_k == 0).
    topk_log_probs [B, Tt, k] float32 descending, topk_ids [B, Tt, k] int32, rest_log_mass
      [B, Tt] float32 = log of the probability outside the top k (when top_k > 0).
    hidden: [len(layers), B, Tt, D] float32 (when layers).
  """
  vocab_size = teacher.vocab_size

  def fn(params, waveform, paddings):
    out = teacher.forward(params, jnp.asarray(waveform, jnp.float32),
                          jnp.asarray(paddings, jnp.float32), layers)
    res = {"frame_paddings": out.frame_paddings}
    if top_k:
      vals, ids = jax.lax.top_k(out.log_probs, top_k)
      in_top = jnp.sum(jax.nn.one_hot(ids, vocab_size, dtype=jnp.int32), axis=-2) > 0
      res["topk_log_probs"] = vals
      res["topk_ids"] = ids.astype(jnp.int32)
      res["rest_log_mass"] = jax.nn.logsumexp(jnp.where(in_top, -jnp.inf, out.log_probs),
                                              axis=-1)
    else:
      res["log_probs"] = out.log_probs
    if layers:
      res["hidden"] = out.hidden
    return jax.lax.stop_gradient(res)

  return jax.jit(fn)


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

  def __init__(self, final_dir: str, items: Sequence[_Planned], vocab_size: int,
               hidden_size: int, top_k: int, layers: tuple[int, ...]):
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
    v = vocab_size
    self.fields: dict[str, np.ndarray] = {}
    if top_k:
      self.fields["topk_log_probs"] = mm(join("topk_log_probs.npy"), dtype=tc.LOG_PROBS_DTYPE,
                                         shape=(n, top_k))
      self.fields["topk_ids"] = mm(join("topk_ids.npy"), dtype=tc.ids_dtype(v), shape=(n, top_k))
      self.fields["rest_log_mass"] = mm(join("rest_log_mass.npy"), dtype=tc.REST_DTYPE, shape=(n,))
    else:
      self.fields["log_probs"] = mm(join("log_probs.npy"), dtype=tc.LOG_PROBS_DTYPE, shape=(n, v))
    if layers:
      self.fields["hidden"] = mm(join("hidden.npy"), dtype=tc.HIDDEN_DTYPE,
                                 shape=(n, len(layers), hidden_size))
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
    tc.write_json_atomic(os.path.join(self.tmp_dir, tc.INDEX_FILE), index)
    if os.path.exists(self.final_dir):  # a stale shard being rebuilt: move it out of the way
      trash = f"{self.final_dir}.old-{os.getpid()}"
      os.rename(self.final_dir, trash)
      os.rename(self.tmp_dir, self.final_dir)
      shutil.rmtree(trash)
    else:
      os.rename(self.tmp_dir, self.final_dir)


def _shard_matches(shard_dir: str, items: Sequence[_Planned]) -> bool:
  path = os.path.join(shard_dir, tc.INDEX_FILE)
  if not os.path.isfile(path):
    return False
  try:
    index = tc.read_json(path)
  except (OSError, ValueError):
    return False
  return (index.get("ids") == [it.id for it in items]
          and index.get("audio_sha256") == [it.audio_sha256 for it in items]
          and index.get("padded_samples") == [it.padded_samples for it in items]
          and index.get("num_frames") == [it.num_frames for it in items])


def _plan(teacher: teacher_lib.Teacher, dataset: pipeline.AsrDataset
          ) -> tuple[list[tuple[int, list[int]]], list[_Planned]]:
  """eval_batches' plan (same seed/epoch/flags) and the utterances in its order."""
  plan = dataset.epoch_plan(0, 0, shuffle=False, drop_remainder=False)
  items = []
  for bucket, indices in plan:
    padded = dataset.buckets.bucket_samples(bucket)
    for i in indices:
      ex = dataset.examples[i]
      items.append(_Planned(ex.id, i, ex.num_samples, padded,
                            teacher.num_frames(ex.num_samples),
                            tc.audio_fingerprint(dataset.audio[ex.id])))
  return plan, items


def build_cache(teacher: teacher_lib.Teacher, dataset: pipeline.AsrDataset,
                out_dir: str, *, top_k: int = 0, layers: Sequence[int] = (),
                shard_size: int = 256,
                tokenizer: text_lib.CharTokenizer | None = None, teacher_path: str | None = None,
                manifest_path: str | None = None, overwrite: bool = False,
                progress: bool = True) -> dict[str, Any]:
  """Runs the teacher over `dataset` and writes (or completes) a cache in `out_dir`.

  Batches are those of `pipeline.eval_batches(dataset)` (same plan, same padded shapes, one
  compiled program per bucket); batches whose utterances all lie in complete shards are not
  assembled or run. The next batch is dispatched before the previous one is written.

  Args:
    teacher: the frozen teacher (`train/teacher.py` `load_teacher`), its params included;
      its compute dtype is recorded.
    dataset: the corpus, from `pipeline.prepare_dataset`.
    out_dir: cache folder (created).
    top_k: 0 stores the full float16 distribution; k > 0 the top-k summary.
    layers: hidden-state indices to store (0..num_hidden_layers), in this order.
    shard_size: utterances per shard (memory stays bounded: fields are memory-mapped).
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
  layers = teacher.check_layers(layers)
  top_k = _check_top_k(top_k, teacher.vocab_size)
  if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
    raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}")
  if tokenizer is not None and tokenizer.vocab_size > teacher.vocab_size:
    raise ValueError(f"tokenizer has {tokenizer.vocab_size} tokens but the teacher's "
                     f"vocab_size is {teacher.vocab_size}")
  out_dir = os.path.abspath(out_dir)
  shards_root = os.path.join(out_dir, tc.SHARDS_DIR)
  meta_path = os.path.join(out_dir, tc.META_FILE)

  core = tc.json_roundtrip({
      "format_version": tc.FORMAT_VERSION,
      "teacher_fingerprint": teacher_lib.params_fingerprint(teacher.params),
      "teacher_family": teacher.family,
      "teacher_config": teacher.describe(),
      "compute_dtype": teacher.compute_dtype,
      "padding_invariant": teacher.padding_invariant,
      "storage": tc.storage_spec(teacher.vocab_size, teacher.hidden_size, top_k, layers),
      "vocab": dict(tokenizer.vocab) if tokenizer is not None else None,
      "frame_rate": {"sample_rate": teacher.sample_rate,
                     "samples_per_frame": teacher.frame_samples,
                     "frame_seconds": teacher.frame_samples / teacher.sample_rate},
  })
  old = None
  if not os.path.isfile(meta_path):  # shards without metadata cannot be trusted
    shutil.rmtree(shards_root, ignore_errors=True)
  else:
    old = tc.read_json(meta_path)
    diffs = [tc.describe_mismatch(f, old.get(f), core[f]) for f in tc.CORE_FIELDS
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

  plan, items = _plan(teacher, dataset)
  shards = [items[i:i + shard_size] for i in range(0, len(items), shard_size)]
  shard_of = {it.id: j for j, shard in enumerate(shards) for it in shard}
  dirs = [os.path.join(shards_root, f"{j:05d}") for j in range(len(shards))]
  todo = {j for j, shard in enumerate(shards) if not _shard_matches(dirs[j], shard)}
  meta = dict(core, teacher_path=teacher_path, manifest_path=manifest_path,
              audio_sha256=tc.set_fingerprint([it.id for it in items],
                                            [it.audio_sha256 for it in items]),
              num_utterances=len(items), num_shards=len(shards), shard_size=shard_size,
              bucket_boundaries=list(dataset.buckets.boundaries),
              audio_seconds=sum(it.num_samples for it in items) / teacher.sample_rate,
              created_unix_time=(old or {}).get("created_unix_time", int(time.time())))
  stale = [n for n in os.listdir(shards_root)
           if tc.SHARD_RE.match(n) and int(n) >= len(shards)]
  if old is None or ((todo or stale) and old.get("complete", False)):
    # Until the shards are complete, the metadata says so (open_cache refuses the cache).
    tc.write_json_atomic(meta_path, dict(meta, complete=False))

  fn = make_cache_fn(teacher, layers, top_k)
  params = teacher.params
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
        writers[j] = _ShardWriter(dirs[j], shards[j], teacher.vocab_size,
                                  teacher.hidden_size, top_k, layers)
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
  final = tc.json_roundtrip(dict(meta, complete=True))
  if tc.read_json(meta_path) != final:  # an unchanged cache is left untouched
    tc.write_json_atomic(meta_path, final)
  return {"out_dir": out_dir, "num_utterances": len(items), "num_shards": len(shards),
          "shards_written": len(todo), "shards_skipped": len(shards) - len(todo),
          "audio_hours": meta["audio_seconds"] / 3600, "seconds": time.time() - start,
          "compiled_shapes": sorted(shapes)}
