"""Teacher frames aligned to the student's frame rate (posteriors and hidden states).


Frame rates (`align_teacher`, `align_hidden`). wav2vec2 emits one frame per 20 ms; a student
with 40 or 80 ms frames sees r = 2 or 4 teacher frames per frame. Student frame j is aligned with
teacher frames [j r, (j + 1) r): teacher posteriors are averaged as PROBABILITIES over the valid
frames of the group (then the log is taken, via a stable logsumexp), hidden vectors are averaged
over the valid frames of the group. The pooled length is ceil(Tt / r): when Tt is not a multiple
of r the last group is partial and averages the frames it has. This matches this repo's
frontends exactly (log-mel 25/10 ms frames + stride-2 subsampling with ceil vs. the wav2vec2
conv stack); the result is then cropped or padded (padding frames) to the student's frame count,
and a difference larger than `tolerance` frames (default 2) is an error, not silently fixed.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp

from distill_jax.losses import checks

Array = jax.Array

ALIGN_RULES = ("mean",)


def _static_ratio(ratio: Any) -> int:
  if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real):
    raise ValueError(f"frame-rate ratio must be a positive integer (student frame length / "
                     f"teacher frame length), got {ratio!r}")
  if not float(ratio).is_integer() or ratio < 1:
    raise ValueError(f"frame-rate ratio must be a positive integer (student frame length / "
                     f"teacher frame length), got {ratio!r}")
  return int(ratio)


def pooled_num_frames(num_teacher_frames: int, ratio: int) -> int:
  """ceil(Tt / r): the frames of a teacher sequence pooled by groups of r (last one partial)."""
  r = _static_ratio(ratio)
  return -(-int(num_teacher_frames) // r)


def check_frame_alignment(num_teacher_frames: int, ratio: int, num_student_frames: int,
                          tolerance: int = 2) -> int:
  """Returns the integer ratio; raises ValueError when ceil(Tt / r) and Ts differ by > tolerance."""
  r = _static_ratio(ratio)
  pooled = pooled_num_frames(num_teacher_frames, r)
  diff = abs(pooled - int(num_student_frames))
  if diff > tolerance:
    raise ValueError(
        f"mismatched frame rates without an alignment rule: the teacher has "
        f"{num_teacher_frames} frames, which pool to {pooled} at ratio {r}, but the student has "
        f"{num_student_frames} frames (difference {diff} > tolerance {tolerance}); check the "
        f"ratio against the student's subsampling")
  return r


def _group_frames(x: Array, valid: Array, r: int, ts: int) -> tuple[Array, Array]:
  """[..., B, Tt, D], [B, Tt] -> [..., B, Ts, r, D], [B, Ts, r] (cropped or padded as invalid)."""
  tt = x.shape[-2]
  target = ts * r
  if target >= tt:
    pad = target - tt
    x = jnp.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, pad), (0, 0)])
    valid = jnp.pad(valid, ((0, 0), (0, pad)), constant_values=False)
  else:
    x = x[..., :target, :]
    valid = valid[:, :target]
  x = x.reshape(x.shape[:-2] + (ts, r, x.shape[-1]))
  valid = valid.reshape(valid.shape[0], ts, r)
  return x, valid


def align_teacher(teacher_log_probs: Array, teacher_paddings: Array, ratio: int,
                  num_student_frames: int, rule: str = "mean",
                  tolerance: int = 2) -> tuple[Array, Array]:
  """Pools teacher posteriors to the student frame rate (mean of probabilities, then log).

  Student frame j covers teacher frames [j r, (j + 1) r); its distribution is the mean of the
  teacher's probabilities over the valid frames of that group, computed as
  logsumexp(log p) - log(count). Groups past ceil(Tt / r) (when Ts is larger) or without valid
  frames are padding; teacher frames past Ts * r (when Ts is smaller) are dropped.

  Args:
    teacher_log_probs: [B, Tt, V] log-probabilities or logits at temperature 1 (normalized here).
    teacher_paddings: [B, Tt], 1.0 marks padding.
    ratio: r, student frame length / teacher frame length (a positive integer: 1, 2, 4).
    num_student_frames: Ts, the student's (static) frame count.
    rule: only 'mean'.
    tolerance: largest allowed |ceil(Tt / r) - Ts| in frames.

  Returns:
    (log_probs [B, Ts, V] float32, normalized; padded frames hold the uniform log(1 / V),
     paddings [B, Ts] float32: a student frame is valid if any teacher frame of its group is).

  Raises:
    ValueError: unknown rule, a ratio that is not a positive integer, shapes that disagree, or
      frame counts that differ by more than `tolerance` ("mismatched frame rates ...").
  """
  if rule not in ALIGN_RULES:
    raise ValueError(f"unknown alignment rule {rule!r}; supported: {ALIGN_RULES}")
  if teacher_log_probs.ndim != 3:
    raise ValueError(f"teacher_log_probs must be [B, Tt, V], got shape {teacher_log_probs.shape}")
  checks.check_shape("teacher_paddings", teacher_paddings, teacher_log_probs.shape[:2])
  r = check_frame_alignment(teacher_log_probs.shape[1], ratio, num_student_frames, tolerance)
  vocab = teacher_log_probs.shape[-1]
  valid = teacher_paddings < 0.5
  lp = jax.nn.log_softmax(
      jnp.where(valid[..., None], teacher_log_probs.astype(jnp.float32), 0.0), axis=-1)
  lp, gvalid = _group_frames(lp, valid, r, int(num_student_frames))
  count = jnp.sum(gvalid.astype(jnp.float32), axis=-1)  # [B, Ts]
  lse = jax.nn.logsumexp(jnp.where(gvalid[..., None], lp, -jnp.inf), axis=-2)  # [B, Ts, V]
  out_valid = count > 0
  pooled = lse - jnp.log(jnp.maximum(count, 1.0))[..., None]
  pooled = jnp.where(out_valid[..., None], pooled, -math.log(vocab))
  return pooled, 1.0 - out_valid.astype(jnp.float32)


def align_hidden(hidden: Array, teacher_paddings: Array, ratio: int, num_student_frames: int,
                 rule: str = "mean", tolerance: int = 2) -> tuple[Array, Array]:
  """Mean-pools teacher hidden vectors to the student frame rate (same groups as align_teacher).

  Args:
    hidden: [..., B, Tt, D], e.g. one layer [B, Tt, D] or a stack [L + 1, B, Tt, D].
    teacher_paddings: [B, Tt], 1.0 marks padding.
    ratio, num_student_frames, rule, tolerance: as in `align_teacher`.

  Returns:
    (pooled [..., B, Ts, D] float32, the mean over the valid frames of each group, 0 at padded
     frames; paddings [B, Ts] float32).
  """
  if rule not in ALIGN_RULES:
    raise ValueError(f"unknown alignment rule {rule!r}; supported: {ALIGN_RULES}")
  if hidden.ndim < 3:
    raise ValueError(f"hidden must be [..., B, Tt, D], got shape {hidden.shape}")
  checks.check_shape("teacher_paddings", teacher_paddings, hidden.shape[-3:-1])
  r = check_frame_alignment(hidden.shape[-2], ratio, num_student_frames, tolerance)
  valid = teacher_paddings < 0.5
  x = jnp.where(valid[..., None], hidden.astype(jnp.float32), 0.0)
  x, gvalid = _group_frames(x, valid, r, int(num_student_frames))
  count = jnp.sum(gvalid.astype(jnp.float32), axis=-1)  # [B, Ts]
  pooled = jnp.sum(x, axis=-2) / jnp.maximum(count, 1.0)[..., None]
  return pooled, (count <= 0).astype(jnp.float32)
