"""Soft-label knowledge distillation: the tempered KL between teacher and student posteriors.

The student is trained on L = alpha * L_hard + beta * T^2 * KL(p_t^T || p_s^T) + gamma * L_hidden
(`train/steps.py` sums the terms); this module is the middle one.

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
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from distill_jax.losses import checks

Array = jax.Array


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
  checks.check_range("temperature", temperature, 0.0, lo_open=True)
  checks.check_range("blank_weight", blank_weight, 0.0, 1.0)
  checks.check_range("blank_threshold", blank_threshold, 0.0, 1.0)
  checks.check_frames("student_logits", student_logits, "teacher_log_probs", teacher_log_probs,
                      paddings, " (the student's [B, T, V]; align frame rates with "
                      "align_teacher, and vocabularies with check_vocab_match)")
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
