"""Hidden-state distillation losses between projected student states and teacher states.

Hidden states (`hidden_loss`, `hidden_states_loss`; the pairs and projections are
`models/projection.py`).
Hidden-state stacks are [L + 1, B, T, D]: index 0 is the input embedding (encoder input after
subsampling / the first transformer layer's input), index i the output of layer i. A mapping is
a tuple of (student_layer, teacher_layer) pairs; each mapped student state goes through its own
linear projection to the teacher width, then one of two per-frame losses:

  'nmse'   (Patient KD, Sun et al. 2019): || s / |s| - t / |t| ||_2^2 = 2 - 2 cos(s, t), the
           squared Euclidean distance between L2-normalized vectors (summed over D, as in the
           paper, so the value lies in [0, 4] whatever D is).
  'l1_cos' (DistilHuBERT, Chang et al. 2022): mean_d |s_d - t_d| - lambda * log sigmoid(cos(s, t)),
           lambda = `cos_weight` = 1 by default as in the paper.

Both are averaged over valid frames, and `hidden_states_loss` averages over the mapped pairs (so
gamma need not change with the number of pairs; the papers sum, which is gamma * P here).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from distill_jax.losses import checks

Array = jax.Array

HIDDEN_LOSS_KINDS = ("nmse", "l1_cos")
_NORM_EPS = 1e-6


def select_layers(hidden_states: Array, layers: Sequence[int]) -> tuple[Array, ...]:
  """hidden_states [L + 1, B, T, D] -> tuple of [B, T, D], one per index (ValueError if absent)."""
  n = hidden_states.shape[0]
  for i in layers:
    if not 0 <= i < n:
      raise ValueError(f"layer {i} does not exist: hidden_states has {n} entries "
                       f"(0 = the input embedding, 1..{n - 1} = layer outputs)")
  return tuple(hidden_states[i] for i in layers)



def _safe_norm(x: Array) -> Array:
  """L2 norm over the last axis, floored at 1e-6 (finite gradient at 0). [..., 1]."""
  return jnp.sqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), _NORM_EPS ** 2))


def nmse_frames(student: Array, teacher: Array) -> Array:
  """Per-frame || s / |s| - t / |t| ||_2^2 = 2 - 2 cos(s, t). [B, T, D] x 2 -> [B, T]."""
  d = student / _safe_norm(student) - teacher / _safe_norm(teacher)
  return jnp.sum(d * d, axis=-1)


def cosine_similarity(student: Array, teacher: Array) -> Array:
  """Per-frame cosine similarity (norms floored at 1e-6). [B, T, D] x 2 -> [B, T]."""
  return jnp.sum(student * teacher, axis=-1) / (
      _safe_norm(student)[..., 0] * _safe_norm(teacher)[..., 0])


def l1_cos_frames(student: Array, teacher: Array, cos_weight: float = 1.0) -> Array:
  """Per-frame mean_d |s - t| - cos_weight * log sigmoid(cos(s, t)). [B, T, D] x 2 -> [B, T]."""
  l1 = jnp.mean(jnp.abs(student - teacher), axis=-1)
  return l1 - cos_weight * jax.nn.log_sigmoid(cosine_similarity(student, teacher))


def hidden_loss(student: Array, teacher: Array, paddings: Array, kind: str = "l1_cos",
                cos_weight: float = 1.0) -> dict[str, Array]:
  """One layer pair's loss, averaged over valid frames (float32).

  Args:
    student: [B, T, D] (projected) student states.
    teacher: [B, T, D] teacher states at the student frame rate (`align_hidden`);
      wrapped in `stop_gradient`.
    paddings: [B, T], 1.0 marks padding (values there are ignored, zero gradient).
    kind: 'nmse' or 'l1_cos' (see the module docstring).
    cos_weight: lambda of 'l1_cos'.

  Returns:
    dict of float32 scalars: `loss` = `sum` / `num_frames` (0 without valid frames), `sum` of
    the per-frame values, `num_frames`.
  """
  if kind not in HIDDEN_LOSS_KINDS:
    raise ValueError(f"unknown hidden-state loss {kind!r}; supported: {HIDDEN_LOSS_KINDS}")
  checks.check_frames("student states", student, "teacher states", teacher, paddings,
                      " (the student's [B, T, D]; project with HiddenProjections and align "
                      "frame rates with align_hidden)")
  valid = paddings < 0.5
  s = jnp.where(valid[..., None], student.astype(jnp.float32), 0.0)
  t = jnp.where(valid[..., None], jax.lax.stop_gradient(teacher).astype(jnp.float32), 0.0)
  per_frame = nmse_frames(s, t) if kind == "nmse" else l1_cos_frames(s, t, cos_weight)
  total = jnp.sum(jnp.where(valid, per_frame, 0.0))
  count = jnp.sum(valid.astype(jnp.float32))
  return dict(loss=total / jnp.maximum(count, 1.0), sum=total, num_frames=count)


def hidden_states_loss(student_states: Sequence[Array], teacher_states: Sequence[Array],
                       paddings: Array, kind: str = "l1_cos",
                       cos_weight: float = 1.0) -> dict[str, Array]:
  """Mean over layer pairs of `hidden_loss`.

  Args:
    student_states: P arrays [B, T, Dt] (e.g. the output of `HiddenProjections`).
    teacher_states: P arrays [B, T, Dt] in the same pair order (e.g. `select_layers` of the
      aligned teacher stack).
    paddings: [B, T], 1.0 marks padding.
    kind, cos_weight: as in `hidden_loss`.

  Returns:
    dict: `loss` (mean over pairs of the per-pair frame means), `per_pair` [P], `sum` (sum over
    pairs of the frame sums / P, so `loss` = `sum` / `num_frames` and a data-parallel step can
    use psum(sum) / psum(num_frames)), `num_frames`.
  """
  if len(student_states) != len(teacher_states):
    raise ValueError(f"got {len(student_states)} student states but {len(teacher_states)} "
                     f"teacher states; they must follow the same layer pairs")
  if not student_states:
    raise ValueError("hidden_states_loss needs at least one layer pair")
  terms = [hidden_loss(s, t, paddings, kind, cos_weight)
           for s, t in zip(student_states, teacher_states)]
  p = len(terms)
  per_pair = jnp.stack([x["loss"] for x in terms])
  return dict(loss=jnp.mean(per_pair), per_pair=per_pair,
              sum=sum(x["sum"] for x in terms) / p, num_frames=terms[0]["num_frames"])
