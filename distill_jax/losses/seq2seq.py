"""Sequence-to-sequence losses: masked label-smoothed cross-entropy, joint CTC-attention.

Targets. For labels y_1..y_U (right-padded, paddings 1.0 = padding) the decoder reads
<s> y_1 .. y_U and predicts y_1 .. y_U </s>: `decoder_io` builds both [B, U+1] arrays and
their paddings (U_b + 1 valid positions per row, the </s> included).

Label smoothing (Szegedy et al. 2016). With smoothing eps and V classes the target distribution
is q = (1 - eps) onehot(y) + eps / V (uniform over all classes, the PyTorch convention), and
the per-token loss is -sum_v q_v log p_v = (1 - eps) (-log p_y) + eps * mean_v(-log p_v).

Joint CTC-attention (Kim, Hori and Watanabe 2017): L = lambda * L_ctc + (1 - lambda) * L_att.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def decoder_io(labels: Array, label_paddings: Array, bos_id: int,
               eos_id: int) -> tuple[Array, Array, Array]:
  """(inputs, targets, paddings), each [B, U+1].

  inputs = <s> y_1 .. y_U (padded positions hold </s>), targets = y_1 .. y_U </s> (the </s>
  at each row's own length U_b, padded positions </s>), paddings 1.0 after position U_b.
  """
  b, u = labels.shape
  lengths = jnp.sum(1.0 - label_paddings, axis=1).round().astype(jnp.int32)  # [B]
  pos = jnp.arange(u + 1)[None, :]
  labels = jnp.where(label_paddings > 0.5, eos_id, labels).astype(jnp.int32)
  inputs = jnp.concatenate([jnp.full((b, 1), bos_id, jnp.int32), labels], axis=1)
  targets = jnp.concatenate([labels, jnp.full((b, 1), eos_id, jnp.int32)], axis=1)
  targets = jnp.where(pos >= lengths[:, None], eos_id, targets)
  inputs = jnp.where(pos > lengths[:, None], eos_id, inputs)
  paddings = (pos > lengths[:, None]).astype(jnp.float32)
  return inputs, targets, paddings


def label_smoothed_cross_entropy(logits: Array, targets: Array, paddings: Array,
                                 smoothing: float = 0.0) -> dict[str, Array]:
  """Masked label-smoothed cross-entropy.

  Args:
    logits: [B, U, V] (computed in float32).
    targets: [B, U] int ids.
    paddings: [B, U], 1.0 marks padding (no loss).
    smoothing: eps in [0, 1).

  Returns:
    dict with `per_example` [B] (summed over valid tokens), `num_tokens` (valid tokens),
    `loss` (sum / num_tokens), `nll_per_example` [B] (the unsmoothed -log p(y) sums) and
    `correct` (valid tokens whose arg-max is the target).
  """
  if not 0.0 <= smoothing < 1.0:
    raise ValueError(f"label smoothing must be in [0, 1), got {smoothing}")
  if logits.shape[:2] != targets.shape or paddings.shape != targets.shape:
    raise ValueError(f"logits {logits.shape}, targets {targets.shape} and paddings "
                     f"{paddings.shape} do not line up as [B, U, V], [B, U], [B, U]")
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(log_p, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  per_token = (1.0 - smoothing) * nll - smoothing * jnp.mean(log_p, axis=-1)
  valid = 1.0 - paddings
  num_tokens = jnp.sum(valid)
  per_example = jnp.sum(per_token * valid, axis=1)
  correct = jnp.sum((jnp.argmax(log_p, -1) == targets) * valid)
  return dict(per_example=per_example, num_tokens=num_tokens,
              loss=jnp.sum(per_example) / jnp.maximum(num_tokens, 1.0),
              nll_per_example=jnp.sum(nll * valid, axis=1), correct=correct)


def joint_ctc_attention(ctc: Array, attention: Array, ctc_weight: float) -> Array:
  """lambda * ctc + (1 - lambda) * attention (any matching shapes; lambda in [0, 1])."""
  if not 0.0 <= ctc_weight <= 1.0:
    raise ValueError(f"the CTC weight lambda must be in [0, 1], got {ctc_weight}")
  return ctc_weight * ctc + (1.0 - ctc_weight) * attention
