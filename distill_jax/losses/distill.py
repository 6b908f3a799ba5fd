"""Knowledge-distillation losses: soft-label KL, frame-rate alignment, hidden-state terms.

The student is trained on

  L = alpha * L_hard + beta * T^2 * KL(p_t^T || p_s^T) + gamma * L_hidden

where L_hard is the CTC loss of `losses/ctc.py`, and the two other terms are built here as pure,
jittable functions of arrays (paddings: 1.0 marks padding, the optax convention).

Soft labels (`kl_divergence`). With student logits z_s and teacher log-probabilities a_t (at
temperature 1; teacher logits work too, see below), the tempered posteriors of a frame are

  p_s^T = softmax(z_s / T),    p_t^T = softmax(a_t / T),

and the per-frame divergence is KL_f = sum_v p_t^T[v] (log p_t^T[v] - log p_s^T[v]), computed in
float32 with `log_softmax`; a vocabulary entry where the teacher probability is exactly 0
(log-probability -inf, e.g. after pooling) contributes 0 (0 log 0 = 0). Frames get weights
w_f = (1 - padding_f) * (blank_weight if P_t(blank) > blank_threshold else 1), where P_t(blank)
is the teacher's blank probability at temperature 1, so frames where the teacher is confidently
silent can be down-weighted. The loss is the weighted mean over frames, times T^2 (Hinton et
al. 2015):

  loss = T^2 * sum_f w_f KL_f / W,    W = sum_f w_f.

Since d KL_f / d z_s[f] = (p_s^T[f] - p_t^T[f]) / T, the gradient with respect to the student
logits is

  d loss / d z_s[f] = T * w_f * (p_s^T[f] - p_t^T[f]) / W,

i.e. T * (p_s^T - p_t^T) / N_valid without blank down-weighting: the T^2 factor keeps the soft
term's gradient on the same scale as the hard term's when T changes. For a data-parallel step,
`sum` and `weight` are returned too: the global loss is psum(sum) / psum(weight).

Teacher input convention: the teacher side is given at temperature 1, as log-probabilities or
as logits (log_softmax(a) differs from a by a per-frame constant, which softmax(a / T) ignores).
Temperature is applied here, to both sides, so cached teacher outputs (stored once as
log-probabilities at T = 1, possibly pooled to the student frame rate) serve any T. Note that
pooling happens at T = 1 and tempering after it: T softens the pooled distribution.

Frame rates (`align_teacher`, `align_hidden`). wav2vec2 emits one frame per 20 ms; a student
with 40 or 80 ms frames sees r = 2 or 4 teacher frames per frame. Student frame j is aligned with
teacher frames [j r, (j + 1) r): teacher posteriors are averaged as PROBABILITIES over the valid
frames of the group (then the log is taken, via a stable logsumexp), hidden vectors are averaged
over the valid frames of the group. The pooled length is ceil(Tt / r): when Tt is not a multiple
of r the last group is partial and averages the frames it has. This matches this repo's
frontends exactly (log-mel 25/10 ms frames + stride-2 subsampling with ceil vs. the wav2vec2
conv stack); the result is then cropped or padded (padding frames) to the student's frame count,
and a difference larger than `tolerance` frames (default 2) is an error, not silently fixed.

Hidden states (`layer_mapping`, `HiddenProjections`, `hidden_loss`, `hidden_states_loss`).
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

Typical use in a distillation step (student frames Ts, teacher log-probs and hidden states
already computed or read from the cache):

  t_lp, t_pad = align_teacher(teacher_log_probs, teacher_paddings, r, Ts)
  pad = jnp.maximum(student_paddings, t_pad)          # frames valid on both sides
  kl = kl_divergence(student_logits, t_lp, pad, temperature=T)
  t_states, _ = align_hidden(jnp.stack(select_layers(teacher_hidden, [t for _, t in pairs])),
                             teacher_paddings, r, Ts)
  s_states = HiddenProjections(pairs, Dt).apply(proj_params, student_hidden)
  hid = hidden_states_loss(s_states, list(t_states), pad, kind="l1_cos")
  terms = distill_loss(ctc_loss(...), kl, hid, alpha=..., beta=..., gamma=...)
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

HIDDEN_LOSS_KINDS = ("nmse", "l1_cos")
LAYER_MAPPING_KINDS = ("last_k", "every_k", "explicit")
ALIGN_RULES = ("mean",)
_NORM_EPS = 1e-6


def _check_range(name: str, value: Any, lo: float, hi: float | None = None,
                 lo_open: bool = False) -> None:
  """Checks a static (Python) number; traced values are left to the caller."""
  if not isinstance(value, numbers.Real):
    return
  bad = value <= lo if lo_open else value < lo
  if hi is not None:
    bad = bad or value > hi
  if bad or math.isnan(value):
    interval = f"{'(' if lo_open else '['}{lo}, {hi if hi is not None else 'inf'}" + (
        "]" if hi is not None else ")")
    raise ValueError(f"{name} must lie in {interval}, got {value!r}")


def _check_shape(name: str, array: Array, shape: tuple[int, ...], hint: str = "") -> None:
  if tuple(array.shape) != tuple(shape):
    raise ValueError(f"{name} has shape {tuple(array.shape)}, expected {tuple(shape)}{hint}")


# ----------------------------------------------------------------------------- soft labels


def kl_divergence(student_logits: Array, teacher_log_probs: Array, paddings: Array,
                  temperature: float = 1.0, *, blank_weight: float = 1.0,
                  blank_threshold: float = 0.9, blank_id: int = 0) -> dict[str, Array]:
  """T^2-scaled, frame-averaged KL(p_t^T || p_s^T) (see the module docstring for the maths).

  Args:
    student_logits: [B, T, V] unnormalized student scores (any float dtype; cast to float32).
    teacher_log_probs: [B, T, V] teacher log-probabilities or logits at temperature 1, already
      at the student frame rate (`align_teacher`). Entries may be -inf (zero probability).
      Wrapped in `stop_gradient`.
    paddings: [B, T], 1.0 marks padding. Values of padded frames (even nan/inf) are ignored and
      get zero gradient.
    temperature: T > 0, applied to both sides.
    blank_weight: weight in [0, 1] of frames whose teacher blank probability (at temperature 1)
      exceeds `blank_threshold`; 1.0 (default) turns down-weighting off.
    blank_threshold: in [0, 1].
    blank_id: the CTC blank.

  Returns:
    dict of float32 scalars: `loss` = `sum` / `weight` (0 when `weight` is 0), `kl` = the
    same weighted mean without the T^2 factor (for logging), `sum` = T^2 *
    sum_f w_f KL_f, `weight` = sum_f w_f, `num_frames` = number of valid frames,
    `num_downweighted` = valid frames where the blank weight applied. Gradient with respect to
    `student_logits`: T * w_f * (p_s^T - p_t^T) / weight.
  """
  _check_range("temperature", temperature, 0.0, lo_open=True)
  _check_range("blank_weight", blank_weight, 0.0, 1.0)
  _check_range("blank_threshold", blank_threshold, 0.0, 1.0)
  if student_logits.ndim != 3:
    raise ValueError(f"student_logits must be [B, T, V], got shape {student_logits.shape}")
  _check_shape("teacher_log_probs", teacher_log_probs, student_logits.shape,
               " (the student's [B, T, V]; align frame rates with align_teacher, and vocabularies"
               " with check_vocab_match)")
  _check_shape("paddings", paddings, student_logits.shape[:2])
  vocab = student_logits.shape[-1]
  if not 0 <= blank_id < vocab:
    raise ValueError(f"blank_id={blank_id} is outside the vocabulary of size {vocab}")

  valid = paddings < 0.5  # [B, T]
  t = jnp.asarray(temperature, jnp.float32)
  # Padded frames are replaced before any arithmetic, so nan/inf there cannot leak into the loss
  # or the gradient (the `where` passes a zero cotangent to the original values).
  zs = jnp.where(valid[..., None], student_logits.astype(jnp.float32), 0.0)
  at = jnp.where(valid[..., None], jax.lax.stop_gradient(teacher_log_probs).astype(jnp.float32),
                 0.0)
  log_ps = jax.nn.log_softmax(zs / t, axis=-1)
  log_pt = jax.nn.log_softmax(at / t, axis=-1)
  pt = jnp.exp(log_pt)
  pos = pt > 0.0
  terms = jnp.where(pos, pt * (jnp.where(pos, log_pt, 0.0) - log_ps), 0.0)
  per_frame = jnp.sum(terms, axis=-1)  # [B, T]

  blank_prob = jnp.exp(jax.nn.log_softmax(at, axis=-1)[..., blank_id])
  downweighted = valid & (blank_prob > blank_threshold)
  w = jnp.where(downweighted, jnp.asarray(blank_weight, jnp.float32), 1.0) * valid
  weight = jnp.sum(w)
  kl_sum = jnp.sum(jnp.where(valid, per_frame, 0.0) * w)
  kl_mean = jnp.where(weight > 0, kl_sum / jnp.where(weight > 0, weight, 1.0), 0.0)
  scale = t * t
  return dict(
      loss=scale * kl_mean,
      kl=kl_mean,
      sum=scale * kl_sum,
      weight=weight,
      num_frames=jnp.sum(valid.astype(jnp.float32)),
      num_downweighted=jnp.sum(downweighted.astype(jnp.float32)),
  )


# ----------------------------------------------------------------------------- alignment


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
  _check_shape("teacher_paddings", teacher_paddings, teacher_log_probs.shape[:2])
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
  _check_shape("teacher_paddings", teacher_paddings, hidden.shape[-3:-1])
  r = check_frame_alignment(hidden.shape[-2], ratio, num_student_frames, tolerance)
  valid = teacher_paddings < 0.5
  x = jnp.where(valid[..., None], hidden.astype(jnp.float32), 0.0)
  x, gvalid = _group_frames(x, valid, r, int(num_student_frames))
  count = jnp.sum(gvalid.astype(jnp.float32), axis=-1)  # [B, Ts]
  pooled = jnp.sum(x, axis=-2) / jnp.maximum(count, 1.0)[..., None]
  return pooled, (count <= 0).astype(jnp.float32)


# ----------------------------------------------------------------------------- hidden states


def layer_mapping(kind: str, num_student_layers: int, num_teacher_layers: int,
                  k: int | None = None,
                  pairs: Sequence[Sequence[int]] | None = None) -> tuple[tuple[int, int], ...]:
  """(student_layer, teacher_layer) pairs into [L + 1]-entry hidden-state stacks (0 = embedding).

  Kinds:
    'last_k': the last k layers onto the last k: (Ls - k + j, Lt - k + j) for j = 1..k.
    'every_k': student layer i -> teacher layer i * k for i = 1..Ls (PKD-skip); k defaults to
      Lt // Ls, e.g. 4 student / 12 teacher layers: (1, 3), (2, 6), (3, 9), (4, 12).
    'explicit': `pairs` as given (index 0, the input embedding, is allowed on either side).

  Raises:
    ValueError: unknown kind, missing/unexpected k or pairs, or a layer index that does not
      exist (named in the message), or a repeated pair.
  """
  for name, n in (("num_student_layers", num_student_layers),
                  ("num_teacher_layers", num_teacher_layers)):
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
      raise ValueError(f"{name} must be a positive integer, got {n!r}")
  ls, lt = num_student_layers, num_teacher_layers
  if kind not in LAYER_MAPPING_KINDS:
    raise ValueError(f"unknown layer mapping {kind!r}; supported: {LAYER_MAPPING_KINDS}")
  if kind != "explicit" and pairs is not None:
    raise ValueError(f"layer mapping {kind!r} takes k, not pairs (got pairs={pairs!r})")
  if kind == "explicit" and k is not None:
    raise ValueError(f"layer mapping 'explicit' takes pairs, not k (got k={k!r})")
  if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
    raise ValueError(f"k must be a positive integer, got {k!r}")

  if kind == "last_k":
    if k is None:
      raise ValueError("layer mapping 'last_k' needs k")
    for side, n in (("student", ls), ("teacher", lt)):
      if k > n:
        raise ValueError(f"last_k with k={k} needs {side} layer {n - k + 1}, which does not "
                         f"exist: the {side} has layers 1..{n} (hidden_states index 0 is the "
                         f"input embedding)")
    out = [(ls - k + j, lt - k + j) for j in range(1, k + 1)]
  elif kind == "every_k":
    k = lt // ls if k is None else k
    if k < 1:
      raise ValueError(f"every_k: the teacher ({lt} layers) has fewer layers than the student "
                       f"({ls}); give k explicitly or use 'explicit'")
    if ls * k > lt:
      raise ValueError(f"every_k with k={k} maps student layer {ls} to teacher layer {ls * k}, "
                       f"which does not exist: the teacher has layers 1..{lt} (hidden_states "
                       f"index 0 is the input embedding)")
    out = [(i, i * k) for i in range(1, ls + 1)]
  else:
    if pairs is None or len(pairs) == 0:
      raise ValueError("layer mapping 'explicit' needs a non-empty list of pairs")
    out = []
    for pair in pairs:
      if len(pair) != 2 or any(isinstance(i, bool) or not isinstance(i, int) for i in pair):
        raise ValueError(f"explicit layer pair {pair!r} must be two integers "
                         f"(student_layer, teacher_layer)")
      s, t = int(pair[0]), int(pair[1])
      if not 0 <= s <= ls:
        raise ValueError(f"student layer {s} in pair {(s, t)} does not exist: valid indices are "
                         f"0..{ls} (0 = the input embedding)")
      if not 0 <= t <= lt:
        raise ValueError(f"teacher layer {t} in pair {(s, t)} does not exist: valid indices are "
                         f"0..{lt} (0 = the input embedding)")
      if (s, t) in out:
        raise ValueError(f"layer pair {(s, t)} appears more than once")
      out.append((s, t))
  return tuple(out)


def select_layers(hidden_states: Array, layers: Sequence[int]) -> tuple[Array, ...]:
  """hidden_states [L + 1, B, T, D] -> tuple of [B, T, D], one per index (ValueError if absent)."""
  n = hidden_states.shape[0]
  for i in layers:
    if not 0 <= i < n:
      raise ValueError(f"layer {i} does not exist: hidden_states has {n} entries "
                       f"(0 = the input embedding, 1..{n - 1} = layer outputs)")
  return tuple(hidden_states[i] for i in layers)


class HiddenProjections(nn.Module):
  """One Dense(teacher_dim) per mapped pair, named `proj_{s}_{t}`, on student hidden states.

  Trained with the student (keep its params next to the student's in the train state so the
  optimizer updates them) and dropped at export: only the student's params are saved for
  inference.

  Attributes:
    pairs: (student_layer, teacher_layer) pairs, e.g. from `layer_mapping`.
    teacher_dim: Dt, the teacher's hidden width.
    dtype: compute dtype of the projections.
  """
  pairs: Sequence[tuple[int, int]]
  teacher_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, hidden_states: Array) -> tuple[Array, ...]:
    """[L + 1, B, T, Ds] -> tuple of [B, T, Dt], in the order of `pairs`."""
    n = hidden_states.shape[0]
    seen = set()
    outs = []
    for s, t in self.pairs:
      if not 0 <= s < n:
        raise ValueError(f"student layer {s} in pair {(s, t)} does not exist: hidden_states has "
                         f"{n} entries (0 = the input embedding, 1..{n - 1} = layer outputs)")
      if (s, t) in seen:
        raise ValueError(f"layer pair {(s, t)} appears more than once")
      seen.add((s, t))
      outs.append(nn.Dense(self.teacher_dim, dtype=self.dtype, name=f"proj_{s}_{t}")(
          hidden_states[s]))
    return tuple(outs)


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
  if student.ndim != 3:
    raise ValueError(f"student states must be [B, T, D], got shape {student.shape}")
  _check_shape("teacher states", teacher, student.shape,
               " (the student's [B, T, D]; project with HiddenProjections and align frame rates "
               "with align_hidden)")
  _check_shape("paddings", paddings, student.shape[:2])
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


# ----------------------------------------------------------------------------- vocab, total


def check_vocab_match(student_vocab: Mapping[str, int], teacher_vocab: Mapping[str, int],
                      max_listed: int = 20) -> None:
  """Raises ValueError listing the differences when the two token -> id maps are not identical.

  The KL term compares posteriors entry by entry, so teacher and student need the same ids.
  """
  if dict(student_vocab) == dict(teacher_vocab):
    return

  def listing(items: list[str]) -> str:
    shown = ", ".join(items[:max_listed])
    more = len(items) - max_listed
    return f"[{shown}{f', ... and {more} more' if more > 0 else ''}]"

  only_s = sorted(set(student_vocab) - set(teacher_vocab), key=lambda x: student_vocab[x])
  only_t = sorted(set(teacher_vocab) - set(student_vocab), key=lambda x: teacher_vocab[x])
  moved = sorted((tok for tok in set(student_vocab) & set(teacher_vocab)
                  if student_vocab[tok] != teacher_vocab[tok]), key=lambda x: student_vocab[x])
  parts = [f"sizes {len(student_vocab)} (student) vs {len(teacher_vocab)} (teacher)"]
  if only_s:
    parts.append("only in the student: " + listing(
        [f"{tok!r} (id {student_vocab[tok]})" for tok in only_s]))
  if only_t:
    parts.append("only in the teacher: " + listing(
        [f"{tok!r} (id {teacher_vocab[tok]})" for tok in only_t]))
  if moved:
    parts.append("different ids: " + listing(
        [f"{tok!r} (student {student_vocab[tok]}, teacher {teacher_vocab[tok]})"
         for tok in moved]))
  raise ValueError("teacher vocabulary differs from the student tokenizer (the KL term needs "
                   "identical id spaces): " + "; ".join(parts))


def _term(value: Any) -> Array | None:
  if value is None:
    return None
  if isinstance(value, Mapping):
    value = value["loss"]
  return jnp.asarray(value, jnp.float32)


def distill_loss(hard: Any = None, kl: Any = None, hidden: Any = None, *, alpha: float,
                 beta: float, gamma: float) -> dict[str, Array]:
  """total = alpha * hard + beta * kl + gamma * hidden.

  Each term is a scalar or a dict with a `loss` entry (as returned by `ctc.ctc_loss`,
  `kl_divergence` and `hidden_states_loss`); `kl` is used as given, so with `kl_divergence` it
  already includes the T^2 factor. A missing term (None) counts as 0 and must have weight 0;
  a term with a static weight of 0 is reported but left out of `total`.

  Returns:
    dict of float32 scalars `hard`, `kl`, `hidden` (unweighted; 0 when missing) and `total`.

  Raises:
    ValueError: a negative weight, or a nonzero weight on a missing term (named).
  """
  out = {}
  total = jnp.zeros((), jnp.float32)
  for name, wname, weight, value in (("hard", "alpha", alpha, hard), ("kl", "beta", beta, kl),
                                     ("hidden", "gamma", gamma, hidden)):
    _check_range(wname, weight, 0.0)
    term = _term(value)
    if term is None:
      if not isinstance(weight, numbers.Real) or weight != 0:
        raise ValueError(f"{wname}={weight!r} weights the {name} term, but no {name} loss was "
                         f"given; pass it or set {wname}=0")
      term = jnp.zeros((), jnp.float32)
    elif not (isinstance(weight, numbers.Real) and weight == 0):  # a 0-weighted nan stays out
      total = total + weight * term
    out[name] = term
  out["total"] = total
  return out
