"""Tests for the RNN-T loss: brute force, a NumPy DP, finite differences, padding, FastEmit."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import log_softmax, logsumexp

from distill_jax.losses import transducer

GRADIENT_MODES = ("beta", "autodiff")

# Everything runs jitted (eager dispatch of the scans is slow), and fastemit_lambda is always
# passed as a traced value, so there is one compile per shape, dtype and gradient mode, shared
# by the tests.
_loss = jax.jit(transducer.rnnt_loss, static_argnames=("blank_id", "gradient"))
_grad = jax.jit(jax.grad(
    lambda x, p, l, lp, lam, gradient: transducer.rnnt_loss(
        x, p, l, lp, fastemit_lambda=lam, gradient=gradient).sum()),
                static_argnames=("gradient",))


def loss(x, p, l, lp, gradient="beta", fastemit_lambda=0.0, blank_id=0):
  """Jitted rnnt_loss [B]."""
  return _loss(x, p, l, lp, blank_id=blank_id, fastemit_lambda=jnp.float32(fastemit_lambda),
               gradient=gradient)


def grad(x, p, l, lp, gradient="beta", fastemit_lambda=0.0):
  """Jitted d sum(rnnt_loss) / d logits."""
  return _grad(x, p, l, lp, jnp.float32(fastemit_lambda), gradient=gradient)


def _paddings(lengths: np.ndarray, width: int) -> np.ndarray:
  return (np.arange(width)[None, :] >= np.asarray(lengths)[:, None]).astype(np.float32)


def _brute_force_nll(logits: np.ndarray, labels: np.ndarray, blank_id: int = 0) -> float:
  """-log sum over every alignment path of one utterance (logits [T, U+1, V])."""
  t_len, u1, _ = logits.shape
  u_len = u1 - 1
  lp = log_softmax(logits.astype(np.float64), axis=-1)
  path_scores = []
  # An alignment is a sequence of T blanks and U labels whose last symbol is a blank: choose
  # the positions of the labels among the first T + U - 1 slots.
  for label_slots in itertools.combinations(range(t_len + u_len - 1), u_len):
    t = u = 0
    score = 0.0
    for slot in range(t_len + u_len):
      if slot in label_slots:
        score += lp[t, u, labels[u]]
        u += 1
      else:
        score += lp[t, u, blank_id]
        t += 1
    assert (t, u) == (t_len, u_len)
    path_scores.append(score)
  return -logsumexp(path_scores)


def _numpy_dp_nll(logits: np.ndarray, t_len: int, u_len: int, labels: np.ndarray,
                  blank_id: int = 0) -> float:
  """Classic alpha recursion over (t, u) in float64 for one utterance (logits [T, U+1, V])."""
  if t_len == 0:
    return 0.0
  lp = log_softmax(logits.astype(np.float64), axis=-1)
  alpha = np.full((t_len, u_len + 1), -np.inf)
  alpha[0, 0] = 0.0
  for t in range(t_len):
    for u in range(u_len + 1):
      if t == 0 and u == 0:
        continue
      terms = []
      if t > 0:
        terms.append(alpha[t - 1, u] + lp[t - 1, u, blank_id])
      if u > 0:
        terms.append(alpha[t, u - 1] + lp[t, u - 1, labels[u - 1]])
      alpha[t, u] = np.logaddexp.reduce(terms)
  return -(alpha[t_len - 1, u_len] + lp[t_len - 1, u_len, blank_id])


def _random_batch(seed: int, bsz: int, t: int, u: int, v: int, scale: float = 2.0,
                  blank_id: int = 0):
  rng = np.random.default_rng(seed)
  logits = (scale * rng.normal(size=(bsz, t, u + 1, v))).astype(np.float32)
  labels = rng.integers(0, v - 1, size=(bsz, u))
  labels = np.where(labels >= blank_id, labels + 1, labels).astype(np.int32)  # never blank
  return logits, labels


# One standard ragged batch, shared by most tests so that compiled functions are reused.
# Lengths include T_b = 0 (fully padded row), U_b = 0, U_b > T_b and T_b = 1.
STD_T_LENS = np.array([7, 1, 4, 0, 6, 7])
STD_U_LENS = np.array([4, 3, 0, 2, 4, 1])


def standard_batch(seed: int = 0):
  """(logits [6, 7, 5, 5] float32, paddings, labels [6, 4], label_paddings)."""
  logits, labels = _random_batch(seed, bsz=6, t=7, u=4, v=5)
  return logits, _paddings(STD_T_LENS, 7), labels, _paddings(STD_U_LENS, 4)


@pytest.mark.parametrize("gradient", GRADIENT_MODES)
@pytest.mark.parametrize("v", [2, 4])
def test_matches_brute_force_over_alignments(v, gradient):
  """Every (T, U) with 1 <= T <= 4, 0 <= U <= 3, as one padded batch (one compile)."""
  shapes = [(t, u) for t in range(1, 5) for u in range(4)]
  logits, labels = _random_batch(seed=v, bsz=len(shapes), t=4, u=3, v=v)
  t_lens = np.array([t for t, _ in shapes])
  u_lens = np.array([u for _, u in shapes])
  got = loss(logits, _paddings(t_lens, 4), labels, _paddings(u_lens, 3), gradient)
  expected = [_brute_force_nll(logits[i, :t, :u + 1], labels[i, :u])
              for i, (t, u) in enumerate(shapes)]
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5)


def test_brute_force_nonzero_blank_id():
  logits, labels = _random_batch(seed=3, bsz=1, t=3, u=2, v=4, blank_id=2)
  got = loss(logits, np.zeros((1, 3)), labels, np.zeros((1, 2)), blank_id=2)
  np.testing.assert_allclose(got[0], _brute_force_nll(logits[0], labels[0], 2), rtol=1e-5)


@pytest.mark.parametrize("gradient", GRADIENT_MODES)
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_numpy_dp_on_ragged_batch(seed, gradient):
  logits, p, labels, lp = standard_batch(seed)
  got = loss(logits, p, labels, lp, gradient)
  expected = [_numpy_dp_nll(logits[b], STD_T_LENS[b], STD_U_LENS[b], labels[b])
              for b in range(len(STD_T_LENS))]
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-6)
  assert got[3] == 0.0  # fully padded utterance


def test_padding_does_not_change_loss_or_gradient():
  """Extra padded frames/labels filled with huge junk logits change nothing."""
  logits, p, labels, lp = standard_batch(seed=1)
  big = np.full((6, 10, 7, 5), 1e4, np.float32)
  big[:, :7, :5] = logits
  big_labels = np.full((6, 6), -1, np.int32)  # padded label ids may be out of range
  big_labels[:, :4] = labels
  big_args = (big, _paddings(STD_T_LENS, 10), big_labels, _paddings(STD_U_LENS, 6))
  np.testing.assert_allclose(loss(*big_args), loss(logits, p, labels, lp), rtol=1e-6)
  g_big = np.asarray(grad(*big_args))
  np.testing.assert_allclose(g_big[:, :7, :5], grad(logits, p, labels, lp), atol=1e-6)
  assert np.all(g_big[:, 7:] == 0) and np.all(g_big[:, :, 5:] == 0)


@pytest.mark.parametrize("gradient", GRADIENT_MODES)
def test_no_nan_for_fully_padded_rows_and_empty_labels(gradient):
  logits, p, labels, lp = standard_batch(seed=2)
  logits[3] = 80.0  # the fully padded row holds large junk
  got = loss(logits, p, labels, lp, gradient)
  g = np.asarray(grad(logits, p, labels, lp, gradient))
  assert np.all(np.isfinite(got)) and np.all(np.isfinite(g))
  assert got[3] == 0.0 and np.all(g[3] == 0)
  # Outside each utterance's lattice the gradient is exactly zero.
  for b, (t, u) in enumerate(zip(STD_T_LENS, STD_U_LENS)):
    assert np.all(g[b, t:] == 0) and np.all(g[b, :, u + 1:] == 0)
  # U = 0: only the all-blank path.
  ref = log_softmax(logits[2, :4, 0].astype(np.float64), axis=-1)[:, 0].sum()
  np.testing.assert_allclose(got[2], -ref, rtol=1e-5)
  # A batch that is entirely padding.
  all_pad = (logits, np.ones_like(p), labels, np.ones_like(lp))
  assert np.all(np.asarray(loss(*all_pad, gradient)) == 0)
  assert np.all(np.asarray(grad(*all_pad, gradient)) == 0)


@pytest.mark.parametrize("gradient", GRADIENT_MODES)
def test_gradient_matches_finite_differences_float64(gradient):
  logits, p, labels, lp = standard_batch(seed=4)
  rng = np.random.default_rng(5)
  with jax.enable_x64(True):
    x = jnp.asarray(logits, jnp.float64)
    g = grad(x, p, labels, lp, gradient)
    assert g.dtype == jnp.float64
    f = lambda x: float(jnp.sum(loss(x, p, labels, lp, gradient)))
    eps = 1e-6
    for _ in range(6):
      direction = jnp.asarray(rng.normal(size=x.shape))
      numeric = (f(x + eps * direction) - f(x - eps * direction)) / (2 * eps)
      np.testing.assert_allclose(jnp.sum(g * direction), numeric, rtol=1e-7, atol=1e-9)


def test_beta_and_autodiff_gradients_agree():
  args = standard_batch(seed=6)
  grads = {mode: grad(*args, mode) for mode in GRADIENT_MODES}
  # Both are float32 computations of the same quantity; posteriors exp(alpha + b + beta - logP)
  # with exponents of magnitude ~50 carry ~50 * eps32 ~ 6e-6 relative rounding.
  np.testing.assert_allclose(grads["beta"], grads["autodiff"], rtol=1e-4, atol=2e-5)
  with jax.enable_x64(True):
    exact = grad(jnp.asarray(args[0], jnp.float64), *args[1:], "beta")
  for mode in GRADIENT_MODES:
    np.testing.assert_allclose(grads[mode], exact, rtol=1e-4, atol=2e-5)


@jax.jit
def _lattice_grads(logits, labels, t_lens, u_lens):
  """(b, e, d logP/db, d logP/de, vjp of the log-softmax step) via the autodiff recursion."""
  (b, e), vjp = jax.vjp(lambda x: transducer.rnnt_log_probs(x, labels), logits)
  gb, ge = jax.grad(lambda b, e: transducer.rnnt_lattice_log_likelihood(
      b, e, t_lens, u_lens, gradient="autodiff").sum(), argnums=(0, 1))(b, e)
  return gb, ge, vjp((-gb, -ge))[0], vjp((-gb, -1.3 * ge))[0]


def test_gradient_rows_sum_to_zero_and_match_occupancy():
  """d loss / d logits sums to 0 over V (softmax); blank+label posteriors sum to T_b + U_b."""
  logits, p, labels, lp = standard_batch(seed=7)
  g = np.asarray(grad(logits, p, labels, lp))
  np.testing.assert_allclose(g.sum(-1), 0.0, atol=1e-5)
  gb, ge, g_chain, _ = _lattice_grads(logits, labels, STD_T_LENS, STD_U_LENS)
  # Every alignment uses exactly T_b blank arcs and U_b label arcs (none for an empty row).
  has_frames = STD_T_LENS > 0
  np.testing.assert_allclose(np.asarray(gb).sum((1, 2)), STD_T_LENS, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(ge).sum((1, 2)), STD_U_LENS * has_frames, rtol=1e-5)
  np.testing.assert_allclose(g, g_chain, rtol=1e-5, atol=1e-5)  # beta vs autodiff, float32


@pytest.mark.parametrize("gradient", GRADIENT_MODES)
def test_fastemit_scales_label_gradients_only(gradient):
  lam = 0.3  # matches the 1.3 in _lattice_grads
  logits, p, labels, lp = standard_batch(seed=8)
  np.testing.assert_array_equal(loss(logits, p, labels, lp, gradient, fastemit_lambda=lam),
                                loss(logits, p, labels, lp, gradient))
  # Expected: chain rule through the log-softmax with lattice cotangents
  # (-d logP/db, -(1 + lambda) d logP/de).
  _, _, g_plain, expected = _lattice_grads(logits, labels, STD_T_LENS, STD_U_LENS)
  got = grad(logits, p, labels, lp, gradient, fastemit_lambda=lam)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)  # float32, two recursions
  assert not np.allclose(got, g_plain, atol=1e-4)
  # A static Python float takes the same path as the traced value above.
  got_static = jax.jit(jax.grad(lambda x: transducer.rnnt_loss(
      x, p, labels, lp, fastemit_lambda=lam, gradient=gradient).sum()))(logits)
  np.testing.assert_allclose(got_static, got, rtol=1e-6, atol=1e-7)


def test_bfloat16_logits_give_float32_loss_and_bfloat16_gradient():
  logits, p, labels, lp = standard_batch(seed=9)
  x16 = jnp.asarray(logits, jnp.bfloat16)
  got = loss(x16, p, labels, lp)
  g = grad(x16, p, labels, lp)
  assert got.dtype == jnp.float32 and g.dtype == jnp.bfloat16
  np.testing.assert_allclose(got, loss(x16.astype(jnp.float32), p, labels, lp), rtol=1e-6)


def test_shape_errors_name_the_arrays():
  with pytest.raises(ValueError, match="labels"):
    transducer.rnnt_loss(np.zeros((1, 3, 4, 5)), np.zeros((1, 3)), np.zeros((1, 2), np.int32),
                         np.zeros((1, 2)))
  with pytest.raises(ValueError, match="gradient"):
    transducer.rnnt_loss(np.zeros((1, 3, 3, 5)), np.zeros((1, 3)), np.zeros((1, 2), np.int32),
                         np.zeros((1, 2)), gradient="nope")


def test_matches_torchaudio():
  torchaudio = pytest.importorskip(
      "torchaudio", reason="torchaudio is not installed (its wheels need torch 2.9.1, the test "
      "stack pins torch 2.13.0): the rnnt_loss reference comparison is not run")
  import torch  # pylint: disable=g-import-not-at-top
  if not hasattr(torchaudio.functional, "rnnt_loss"):
    pytest.skip(f"torchaudio {torchaudio.__version__} has no functional.rnnt_loss")

  logits, p, labels, lp = standard_batch(seed=11)
  keep = STD_T_LENS > 0  # torchaudio rejects zero-length utterances
  logits, p, labels, lp = logits[keep], p[keep], labels[keep], lp[keep]
  t_lens, u_lens = STD_T_LENS[keep], STD_U_LENS[keep]
  ours = loss(logits, p, labels, lp)
  g = np.asarray(grad(logits, p, labels, lp))
  x = torch.tensor(logits, requires_grad=True)
  ref = torchaudio.functional.rnnt_loss(
      x, torch.tensor(labels, dtype=torch.int32), torch.tensor(t_lens, dtype=torch.int32),
      torch.tensor(u_lens, dtype=torch.int32), blank=0, reduction="none")
  ref.sum().backward()
  np.testing.assert_allclose(ours, ref.detach().numpy(), rtol=1e-4)
  # Outside each utterance our gradient is exactly 0; compare the valid region only.
  for b, (t, u) in enumerate(zip(t_lens, u_lens)):
    np.testing.assert_allclose(g[b, :t, :u + 1], x.grad.numpy()[b, :t, :u + 1], atol=1e-4)
