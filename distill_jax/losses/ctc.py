"""CTC loss with infeasible examples masked out and counted.

`optax.ctc_loss` returns about -log(1e-5) * T for an example whose labels cannot fit its frames
(a label sequence needs one frame per label plus one blank between repeated labels), which
would silently dominate a batch mean. Such examples, and empty ones (padding rows), get weight
0 here and are reported in `num_infeasible`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def required_frames(labels: jax.Array, label_paddings: jax.Array) -> jax.Array:
  """Minimum frames a CTC alignment of each label sequence needs: U + #adjacent repeats. [B]."""
  valid = 1.0 - label_paddings
  repeats = (labels[:, 1:] == labels[:, :-1]) * valid[:, 1:] * valid[:, :-1]
  return (jnp.sum(valid, 1) + jnp.sum(repeats, 1)).astype(jnp.int32)


def ctc_loss(logits: jax.Array, logit_paddings: jax.Array, labels: jax.Array,
             label_paddings: jax.Array, blank_id: int = 0) -> dict[str, jax.Array]:
  """Per-example CTC negative log-likelihood with feasibility masking.

  Args:
    logits: [B, T, V] unnormalized scores (float32).
    logit_paddings: [B, T], 1.0 marks padding.
    labels: [B, U] int32 token ids.
    label_paddings: [B, U], 1.0 marks padding.
    blank_id: the CTC blank.

  Returns:
    dict with `per_example` [B] (0 where masked), `weights` [B] (1.0 for feasible non-empty
    examples), `loss` (sum of NLL / number of target tokens of counted examples),
    `num_infeasible` (labels that cannot fit their frames), `num_tokens`.
  """
  frames = jnp.sum(1.0 - logit_paddings, axis=1).astype(jnp.int32)
  num_labels = jnp.sum(1.0 - label_paddings, axis=1)
  need = required_frames(labels, label_paddings)
  feasible = need <= frames
  nonempty = num_labels > 0
  weights = (feasible & nonempty).astype(jnp.float32)
  nll = optax.ctc_loss(logits.astype(jnp.float32), logit_paddings, labels, label_paddings,
                       blank_id=blank_id)
  per_example = jnp.where(weights > 0, nll, 0.0)
  num_tokens = jnp.sum(num_labels * weights)
  return dict(
      per_example=per_example,
      weights=weights,
      loss=jnp.sum(per_example) / jnp.maximum(num_tokens, 1.0),
      num_infeasible=jnp.sum((~feasible) & nonempty),
      num_tokens=num_tokens,
  )
