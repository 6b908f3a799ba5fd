"""Sequence-to-sequence losses on known inputs: decoder targets, label-smoothed CE, joint
CTC-attention."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.losses import seq2seq

BOS, EOS = 1, 2


def test_decoder_io_shifts_labels_and_places_eos_at_each_length():
  labels = jnp.array([[5, 6, 7], [8, 0, 0], [0, 0, 0]])
  paddings = jnp.array([[0, 0, 0], [0, 1, 1], [1, 1, 1]], jnp.float32)
  inputs, targets, pad = seq2seq.decoder_io(labels, paddings, BOS, EOS)
  np.testing.assert_array_equal(inputs, [[1, 5, 6, 7], [1, 8, 2, 2], [1, 2, 2, 2]])
  np.testing.assert_array_equal(targets, [[5, 6, 7, 2], [8, 2, 2, 2], [2, 2, 2, 2]])
  np.testing.assert_array_equal(pad, [[0, 0, 0, 0], [0, 0, 1, 1], [0, 1, 1, 1]])


def test_cross_entropy_without_smoothing_is_the_masked_nll():
  logits = jnp.log(jnp.array([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]]]))
  targets = jnp.array([[0, 1, 2]])
  paddings = jnp.array([[0.0, 0.0, 1.0]])  # the third token is padding
  res = seq2seq.label_smoothed_cross_entropy(logits, targets, paddings, 0.0)
  expected = -(np.log(0.5) + np.log(0.8))
  np.testing.assert_allclose(res["per_example"], [expected], rtol=1e-6)
  np.testing.assert_allclose(res["loss"], expected / 2, rtol=1e-6)
  assert float(res["num_tokens"]) == 2 and float(res["correct"]) == 2


def test_label_smoothing_matches_the_smoothed_target_distribution():
  """Against -sum_v q_v log p_v with q = (1 - eps) onehot + eps / V, computed in NumPy."""
  rng = np.random.default_rng(0)
  b, u, v, eps = 3, 5, 7, 0.1
  logits = rng.normal(size=(b, u, v)).astype(np.float32)
  targets = rng.integers(0, v, size=(b, u))
  paddings = (np.arange(u)[None] >= np.array([5, 3, 1])[:, None]).astype(np.float32)
  res = seq2seq.label_smoothed_cross_entropy(jnp.asarray(logits), jnp.asarray(targets),
                                             jnp.asarray(paddings), eps)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  q = (1 - eps) * np.eye(v)[targets] + eps / v
  per_token = -(q * logp).sum(-1) * (1 - paddings)
  np.testing.assert_allclose(res["per_example"], per_token.sum(1), rtol=1e-5)
  np.testing.assert_allclose(res["loss"], per_token.sum() / (1 - paddings).sum(), rtol=1e-5)
  # d loss / d logits = (softmax - q) per valid token, 0 on padding.
  grad = jax.grad(lambda z: seq2seq.label_smoothed_cross_entropy(
      z, jnp.asarray(targets), jnp.asarray(paddings), eps)["per_example"].sum())(
          jnp.asarray(logits))
  expected = (np.exp(logp) - q) * (1 - paddings)[..., None]
  np.testing.assert_allclose(grad, expected, atol=1e-6)


def test_cross_entropy_errors_name_the_problem():
  with pytest.raises(ValueError, match="label smoothing"):
    seq2seq.label_smoothed_cross_entropy(jnp.zeros((1, 2, 3)), jnp.zeros((1, 2), int),
                                         jnp.zeros((1, 2)), 1.0)
  with pytest.raises(ValueError, match="do not line up"):
    seq2seq.label_smoothed_cross_entropy(jnp.zeros((1, 2, 3)), jnp.zeros((1, 3), int),
                                         jnp.zeros((1, 3)))


def test_joint_ctc_attention_weights():
  ctc, att = jnp.array([2.0, 4.0]), jnp.array([1.0, 0.0])
  np.testing.assert_allclose(seq2seq.joint_ctc_attention(ctc, att, 0.3), [1.3, 1.2])
  np.testing.assert_allclose(seq2seq.joint_ctc_attention(ctc, att, 0.0), att)
  np.testing.assert_allclose(seq2seq.joint_ctc_attention(ctc, att, 1.0), ctc)
  with pytest.raises(ValueError, match="lambda"):
    seq2seq.joint_ctc_attention(ctc, att, 1.5)
