"""RNN-Transducer loss (Graves 2012) written in JAX, with optional FastEmit.

Lattice. For one utterance with T frames and U labels y_1..y_U the joint network gives logits
z[t, u, :] for 0 <= t < T, 0 <= u <= U ("u labels emitted so far"). From node (t, u) the model
either emits blank and moves to (t + 1, u) with log-probability

    b[t, u] = z[t, u, blank] - logsumexp(z[t, u, :])

or emits the next label and moves to (t, u + 1) with log-probability

    e[t, u] = z[t, u, y_{u+1}] - logsumexp(z[t, u, :])          (u < U).

An alignment starts at (0, 0) and ends with the blank leaving (T - 1, U); the loss is
-log P(y|x) = -log sum over alignments of exp(sum of their b and e terms).

Fused log-softmax. Only b [B, T, U+1] and e [B, T, U] are ever formed: the target logits are
gathered from z and the log-normalizer is a reduction, so beyond the joint logits the forward
pass holds O(B*T*U) values. The backward pass of that step is a custom VJP that recomputes the
softmax from z and the saved log-normalizer in one elementwise pass, writing the logits'
gradient directly (it does not keep a [B, T, U+1, V] residual).

Recursion. alpha[t, u] = logaddexp(alpha[t-1, u] + b[t-1, u], alpha[t, u-1] + e[t, u-1]),
alpha[0, 0] = 0, and log P = alpha[T-1, U] + b[T-1, U]. Nodes on one anti-diagonal
n = t + u depend only on the previous anti-diagonal, so the [T, U+1] grids are skewed into
[T+U, U+1] grids whose row n holds the diagonal n (indexed by u) and `lax.scan` runs over the
T+U-1 diagonals with a vector of U+1 values (times B) per step instead of T*U scalar steps.

Gradients. `gradient="beta"` (default) uses a custom VJP: the backward pass runs the beta
recursion beta[t, u] = logaddexp(b[t, u] + beta[t+1, u], e[t, u] + beta[t, u+1]) over the
diagonals in reverse and forms the arc posteriors
    d log P / d b[t, u] = exp(alpha[t, u] + b[t, u] + beta[t+1, u] - log P),
    d log P / d e[t, u] = exp(alpha[t, u] + e[t, u] + beta[t, u+1] - log P).
`gradient="autodiff"` differentiates through the alpha scan instead (same result; kept as an
independent check and for higher-order derivatives, which the custom VJP does not support).

Batching and padding. Frames and labels are right-padded (paddings 1.0 = padding, the optax
convention); each utterance's lengths T_b, U_b are read from the paddings. Arcs that leave the
valid [T_b, U_b+1] region are masked to a large negative number before the recursion, so
padded logits never reach the result or its gradient, and log P_b is read at
alpha[T_b-1, U_b] + b[T_b-1, U_b]. An utterance with T_b = 0 (a fully padded row) has loss 0
and zero gradient; U_b = 0 is the all-blank path.

FastEmit (Yu et al. 2021, "FastEmit: Low-latency Streaming ASR with Sequence-level Emission
Regularization"). With lambda > 0 the gradient with respect to every label-emission
log-probability e[t, u] is scaled by (1 + lambda) while blank gradients are unchanged, i.e.
    d L / d e[t, u] = -(1 + lambda) * exp(alpha[t, u] + e[t, u] + beta[t, u+1] - log P),
    d L / d b[t, u] = -exp(alpha[t, u] + b[t, u] + beta[t+1, u] - log P),
which is the formulation of the paper's eq. (9) as implemented by warp-transducer and NeMo.
The returned loss value stays the plain negative log-likelihood (it is not the regularized
objective), matching those implementations. It is implemented with a straight-through term
e + lambda * (e - stop_gradient(e)), so it works with both gradient modes.
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp
from jax import lax

# A finite stand-in for log(0): sums of a few thousand of them stay finite in float32, and
# unlike -inf it never produces inf - inf = nan in logaddexp or its gradient.
_NEG = -1e30

GradientMode = Literal["beta", "autodiff"]


# --------------------------------------------------------------------------------------------
# Fused log-softmax: blank and target log-probabilities only.
# --------------------------------------------------------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _lattice_log_probs(logits: jax.Array, labels_ext: jax.Array,
                       blank_id: int) -> tuple[jax.Array, jax.Array]:
  """b [B, T, U+1] and e [B, T, U+1] (float32 or wider) from logits [B, T, U+1, V].

  labels_ext [B, U+1] int32 holds the labels with one extra (ignored) column, so the gather
  runs on the full logits without slicing them; e[..., U] is meaningless and masked later.
  """
  out, _ = _lattice_log_probs_fwd(logits, labels_ext, blank_id)
  return out


def _compute_dtype(dtype) -> jnp.dtype:
  """float32, or float64 when the input already is (used by float64 gradient checks)."""
  return jnp.promote_types(dtype, jnp.float32)


def _lattice_log_probs_fwd(logits, labels_ext, blank_id):
  dt = _compute_dtype(logits.dtype)
  lse = jax.nn.logsumexp(logits.astype(dt), axis=-1)  # [B, T, U+1]
  blank_logit = logits[..., blank_id].astype(dt)
  idx = jnp.broadcast_to(labels_ext[:, None, :, None], logits.shape[:-1] + (1,))
  target_logit = jnp.take_along_axis(logits, idx, axis=-1)[..., 0].astype(dt)
  return (blank_logit - lse, target_logit - lse), (logits, labels_ext, lse)


def _lattice_log_probs_bwd(blank_id, res, cts):
  logits, labels_ext, lse = res
  g_blank, g_target = cts  # [B, T, U+1] each
  vocab = jnp.arange(logits.shape[-1], dtype=labels_ext.dtype)
  is_blank = vocab == blank_id                                   # [V]
  is_target = vocab == labels_ext[:, None, :, None]              # [B, 1, U+1, V]
  softmax = jnp.exp(logits.astype(lse.dtype) - lse[..., None])
  g = (jnp.where(is_blank, g_blank[..., None], 0.0)
       + jnp.where(is_target, g_target[..., None], 0.0)
       - (g_blank + g_target)[..., None] * softmax)
  # Cells whose cotangents are zero (padding) get exactly zero gradient, even if their logits
  # overflow the softmax.
  active = (g_blank != 0) | (g_target != 0)
  g = jnp.where(active[..., None], g, 0.0)
  return g.astype(logits.dtype), None


_lattice_log_probs.defvjp(_lattice_log_probs_fwd, _lattice_log_probs_bwd)


def rnnt_log_probs(logits: jax.Array, labels: jax.Array,
                   blank_id: int = 0) -> tuple[jax.Array, jax.Array]:
  """Blank and next-label log-probabilities of the RNN-T lattice (fused log-softmax).

  Args:
    logits: joint-network logits [B, T, U+1, V], any float dtype.
    labels: int labels [B, U].
    blank_id: blank index in the vocabulary.

  Returns:
    (blank_log_probs [B, T, U+1], label_log_probs [B, T, U]), float32 (float64 for float64
    logits);
    label_log_probs[b, t, u] = log softmax(logits[b, t, u])[labels[b, u]].
  """
  labels = labels.astype(jnp.int32)
  labels_ext = jnp.pad(labels, ((0, 0), (0, 1)), constant_values=blank_id)
  b, e = _lattice_log_probs(logits, labels_ext, blank_id)
  return b, e[..., :-1]


# --------------------------------------------------------------------------------------------
# Skewing [T, C] grids into anti-diagonals.
# --------------------------------------------------------------------------------------------


def _skew(x: jax.Array, fill: float) -> jax.Array:
  """[B, T, C] -> [T+C-1, B, C] with out[n, :, c] = x[:, n-c, c] (fill outside 0 <= n-c < T).

  Each column c is shifted down by c rows. Done with a pad and two reshapes: after padding
  the time axis to T+C and laying columns out contiguously ([B, C*(T+C)]), dropping the last C
  entries and re-reading the buffer with row length T+C-1 shifts column c by exactly c.
  """
  bsz, t, c = x.shape
  x = jnp.pad(x, ((0, 0), (0, c), (0, 0)), constant_values=fill)  # [B, T+C, C]
  x = jnp.swapaxes(x, 1, 2).reshape(bsz, c * (t + c))[:, :c * (t + c - 1)]
  x = x.reshape(bsz, c, t + c - 1)                                 # [B, C, T+C-1]
  return jnp.transpose(x, (2, 0, 1))


def _unskew(y: jax.Array, t: int) -> jax.Array:
  """Inverse of `_skew`: [T+C-1, B, C] -> [B, T, C] with out[:, t, c] = y[t+c, :, c]."""
  n, bsz, c = y.shape
  y = jnp.transpose(y, (1, 2, 0)).reshape(bsz, c * n)               # [B, C*(T+C-1)]
  y = jnp.pad(y, ((0, 0), (0, c))).reshape(bsz, c, t + c)[:, :, :t]
  return jnp.swapaxes(y, 1, 2)


def _shift_up(x: jax.Array) -> jax.Array:
  """x[..., u] -> x[..., u+1] (last entry _NEG)."""
  return jnp.concatenate([x[..., 1:], jnp.full_like(x[..., :1], _NEG)], axis=-1)


def _shift_down(x: jax.Array) -> jax.Array:
  """x[..., u] -> x[..., u-1] (first entry _NEG)."""
  return jnp.concatenate([jnp.full_like(x[..., :1], _NEG), x[..., :-1]], axis=-1)


# --------------------------------------------------------------------------------------------
# Alpha / beta recursions over the skewed lattice.
# --------------------------------------------------------------------------------------------


def _mask_lattice(blank_lp, label_lp, logit_lengths, label_lengths):
  """Masks arcs outside each utterance; returns b, e as [B, T, U+1] float32."""
  _, t, u1 = blank_lp.shape
  tt = jnp.arange(t)[None, :, None]
  uu = jnp.arange(u1)[None, None, :]
  t_ok = tt < logit_lengths[:, None, None]
  b = jnp.where(t_ok & (uu <= label_lengths[:, None, None]), blank_lp, _NEG)
  e = jnp.pad(label_lp, ((0, 0), (0, 0), (0, 1)))
  e = jnp.where(t_ok & (uu < label_lengths[:, None, None]), e, _NEG)
  return b, e


def _alpha_diagonals(b_sk: jax.Array, e_sk: jax.Array) -> jax.Array:
  """Log alphas on all anti-diagonals: [N, B, C] from skewed arcs b_sk, e_sk [N, B, C]."""
  _, bsz, c = b_sk.shape
  alpha0 = jnp.full((bsz, c), _NEG, b_sk.dtype).at[:, 0].set(0.0)

  def step(alpha, arcs):
    b_prev, e_prev = arcs
    alpha = jnp.logaddexp(alpha + b_prev, _shift_down(alpha + e_prev))
    return alpha, alpha

  _, rest = lax.scan(step, alpha0, (b_sk[:-1], e_sk[:-1]))
  return jnp.concatenate([alpha0[None], rest], axis=0)


def _final_index(logit_lengths, label_lengths):
  """Anti-diagonal of the last node (T_b - 1, U_b), clipped to be a valid index."""
  return jnp.maximum(logit_lengths - 1 + label_lengths, 0)


def _read_final(alphas, b, logit_lengths, label_lengths):
  """log P [B] = alpha[T_b-1, U_b] + b[T_b-1, U_b]; 0 where T_b == 0."""
  bsz = alphas.shape[1]
  rows = jnp.arange(bsz)
  n_end = _final_index(logit_lengths, label_lengths)
  t_end = jnp.maximum(logit_lengths - 1, 0)
  log_p = alphas[n_end, rows, label_lengths] + b[rows, t_end, label_lengths]
  return jnp.where(logit_lengths > 0, log_p, 0.0)


def _log_likelihood_autodiff(b, e, logit_lengths, label_lengths):
  b, e = _mask_lattice(b, e, logit_lengths, label_lengths)
  alphas = _alpha_diagonals(_skew(b, _NEG), _skew(e, _NEG))
  return _read_final(alphas, b, logit_lengths, label_lengths)


@jax.custom_vjp
def _log_likelihood_beta(b, e, logit_lengths, label_lengths):
  return _log_likelihood_beta_fwd(b, e, logit_lengths, label_lengths)[0]


def _log_likelihood_beta_fwd(b, e, logit_lengths, label_lengths):
  b, e = _mask_lattice(b, e, logit_lengths, label_lengths)
  b_sk, e_sk = _skew(b, _NEG), _skew(e, _NEG)
  alphas = _alpha_diagonals(b_sk, e_sk)
  log_p = _read_final(alphas, b, logit_lengths, label_lengths)
  return log_p, (b_sk, e_sk, alphas, log_p, logit_lengths, label_lengths)


def _log_likelihood_beta_bwd(res, g):
  b_sk, e_sk, alphas, log_p, logit_lengths, label_lengths = res
  n_diag, bsz, c = b_sk.shape
  t = n_diag - c + 1
  n_end = (logit_lengths - 1 + label_lengths)[:, None]        # [B, 1]
  is_end_col = jnp.arange(c)[None, :] == label_lengths[:, None]
  valid = logit_lengths > 0
  log_p = jnp.where(valid, log_p, 0.0)[:, None]
  g = jnp.where(valid, g, 0.0)[:, None]

  def step(beta_next, xs):
    n, b_n, e_n, alpha_n = xs
    terminal = (n == n_end) & is_end_col                       # node (T_b-1, U_b)
    # After the final blank the remaining log-probability is 0.
    beta_after_blank = jnp.where(terminal, 0.0, beta_next)
    beta_after_label = _shift_up(beta_next)
    via_blank = b_n + beta_after_blank
    via_label = e_n + beta_after_label
    beta = jnp.logaddexp(via_blank, via_label)
    post_b = g * jnp.exp(alpha_n + via_blank - log_p)
    post_e = g * jnp.exp(alpha_n + via_label - log_p)
    return beta, (post_b, post_e)

  beta_init = jnp.full((bsz, c), _NEG, b_sk.dtype)
  xs = (jnp.arange(n_diag), b_sk, e_sk, alphas)
  _, (post_b, post_e) = lax.scan(step, beta_init, xs, reverse=True)
  ct_b = _unskew(post_b, t)
  ct_e = _unskew(post_e, t)[..., :-1]
  return ct_b, ct_e, None, None


_log_likelihood_beta.defvjp(_log_likelihood_beta_fwd, _log_likelihood_beta_bwd)


def rnnt_lattice_log_likelihood(blank_log_probs: jax.Array, label_log_probs: jax.Array,
                                logit_lengths: jax.Array, label_lengths: jax.Array, *,
                                gradient: GradientMode = "beta") -> jax.Array:
  """log P(y|x) from the lattice log-probabilities (the loss without the softmax step).

  Args:
    blank_log_probs: [B, T, U+1] float32, b[t, u] (see module docstring).
    label_log_probs: [B, T, U] float32, e[t, u].
    logit_lengths: [B] int, valid frames T_b <= T.
    label_lengths: [B] int, valid labels U_b <= U.
    gradient: "beta" (custom VJP with the beta recursion) or "autodiff" (through the scan).

  Returns:
    log P [B] float32; 0 for utterances with T_b == 0.
  """
  dt = _compute_dtype(blank_log_probs.dtype)
  b = blank_log_probs.astype(dt)
  e = label_log_probs.astype(dt)
  logit_lengths = logit_lengths.astype(jnp.int32)
  label_lengths = label_lengths.astype(jnp.int32)
  if gradient == "beta":
    return _log_likelihood_beta(b, e, logit_lengths, label_lengths)
  if gradient == "autodiff":
    return _log_likelihood_autodiff(b, e, logit_lengths, label_lengths)
  raise ValueError(f"gradient must be 'beta' or 'autodiff', got {gradient!r}")


def rnnt_loss(logits: jax.Array, logit_paddings: jax.Array, labels: jax.Array,
              label_paddings: jax.Array, blank_id: int = 0, fastemit_lambda: float = 0.0, *,
              gradient: GradientMode = "beta") -> jax.Array:
  """Per-utterance RNN-T negative log-likelihood.

  Args:
    logits: joint-network logits [B, T, U+1, V] (any float dtype; the loss is computed in
      float32 and the gradient has the logits' dtype).
    logit_paddings: [B, T], 1.0 marks a padded frame; padding is trailing.
    labels: int labels [B, U] (without blank).
    label_paddings: [B, U], 1.0 marks a padded label; padding is trailing.
    blank_id: blank index in the vocabulary.
    fastemit_lambda: FastEmit regularization weight (0 disables it); scales the gradient of
      the label-emission log-probabilities by (1 + fastemit_lambda), see the module docstring.
      The returned value is the plain negative log-likelihood either way.
    gradient: "beta" (custom VJP, default) or "autodiff" (through the alpha scan).

  Returns:
    loss [B] float32: -log P(labels | frames) per utterance, 0 for fully padded utterances.
  """
  bsz, t, u1, _ = logits.shape
  if labels.shape != (bsz, u1 - 1) or label_paddings.shape != labels.shape:
    raise ValueError(f"labels {labels.shape} / label_paddings {label_paddings.shape} do not "
                     f"match logits {logits.shape} (expected [B, U] with U+1 = {u1})")
  if logit_paddings.shape != (bsz, t):
    raise ValueError(f"logit_paddings {logit_paddings.shape} do not match logits {logits.shape}")
  logit_lengths = jnp.sum(1.0 - logit_paddings, axis=1).round().astype(jnp.int32)
  label_lengths = jnp.sum(1.0 - label_paddings, axis=1).round().astype(jnp.int32)
  # Padded label ids may be arbitrary (e.g. -1): keep the gather in range.
  labels = jnp.where(label_paddings > 0.5, blank_id, labels).astype(jnp.int32)
  b, e = rnnt_log_probs(logits, labels, blank_id)
  if not (isinstance(fastemit_lambda, (int, float)) and fastemit_lambda == 0):
    e = e + fastemit_lambda * (e - lax.stop_gradient(e))
  log_p = rnnt_lattice_log_likelihood(b, e, logit_lengths, label_lengths, gradient=gradient)
  return jnp.where(logit_lengths > 0, -log_p, 0.0)
