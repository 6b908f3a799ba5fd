"""Tests for CTC greedy decoding and prefix beam search (scored against optax.ctc_loss)."""

from __future__ import annotations

import importlib.util

import jax
import numpy as np
import optax
import pytest

from distill_jax.decode import ctc


def _one_hot_logits(best: np.ndarray, v: int) -> np.ndarray:
  """Logits whose arg-max per frame is `best` [B, T]."""
  return 5.0 * np.eye(v, dtype=np.float32)[best]


def _log_softmax(x: np.ndarray) -> np.ndarray:
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


@jax.jit
def _ctc_ll(log_probs: np.ndarray, labels: np.ndarray, label_paddings: np.ndarray):
  """CTC log-likelihood [N] of N label rows under one utterance's log_probs [T, V]."""
  n = labels.shape[0]
  lp = jax.numpy.broadcast_to(log_probs[None], (n,) + log_probs.shape)
  return -optax.ctc_loss(lp, jax.numpy.zeros(lp.shape[:2]), labels, label_paddings)


def ctc_log_likelihood(log_probs: np.ndarray, seqs) -> np.ndarray:
  """log P(seq | x) for each label sequence, via optax (labels padded to width T)."""
  t = log_probs.shape[0]
  labels = np.zeros((len(seqs), t), np.int32)
  paddings = np.ones((len(seqs), t), np.float32)
  for i, s in enumerate(seqs):
    labels[i, :len(s)] = s
    paddings[i, :len(s)] = 0.0
  return np.asarray(_ctc_ll(np.asarray(log_probs, np.float32), labels, paddings))


def _peaky_log_probs(rng, t: int, v: int, peak: float = 0.95) -> np.ndarray:
  """Random posteriors whose arg-max has probability >= `peak` on every frame."""
  best = rng.integers(0, v, size=t)
  noise = rng.dirichlet(np.ones(v - 1), size=t) * (1 - peak)
  probs = np.zeros((t, v))
  for i in range(t):
    probs[i, best[i]] = peak
    probs[i, np.arange(v) != best[i]] = noise[i]
  return np.log(probs)


def _greedy_one(log_probs: np.ndarray, blank_id: int = 0) -> tuple[int, ...]:
  ids, lengths = ctc.ctc_greedy(log_probs[None], np.zeros((1, log_probs.shape[0])),
                                blank_id=blank_id)
  return tuple(ctc.row_to_list(ids[0], lengths[0]))


# ------------------------------------------------------------------------------ greedy


def test_greedy_collapses_repeats_removes_blanks_and_respects_paddings():
  best = np.array([
      [0, 1, 1, 0, 1, 2, 2, 0],   # "a a b": the blank separates the two a's
      [3, 3, 3, 0, 0, 2, 2, 1],   # padding from frame 3 on: only "c"
      [0, 0, 0, 0, 0, 0, 0, 0],   # all blank
      [1, 2, 1, 2, 3, 3, 3, 3],   # alternation, no blanks
  ])
  paddings = np.zeros((4, 8), np.float32)
  paddings[1, 3:] = 1.0
  ids, lengths = ctc.ctc_greedy(_one_hot_logits(best, 4), paddings)
  assert ids.dtype == np.int32 and ids.shape == (4, 8)
  np.testing.assert_array_equal(lengths, [3, 1, 0, 5])
  np.testing.assert_array_equal(ids, [
      [1, 1, 2, -1, -1, -1, -1, -1],
      [3, -1, -1, -1, -1, -1, -1, -1],
      [-1] * 8,
      [1, 2, 1, 2, 3, -1, -1, -1],
  ])
  assert ctc.to_lists(ids, lengths) == [[1, 1, 2], [3], [], [1, 2, 1, 2, 3]]
  assert ctc.row_to_list(ids[0]) == [1, 1, 2]        # stops at the first -1
  assert ctc.row_to_list(ids[3], 2) == [1, 2]


def test_greedy_with_nonzero_blank_and_log_probs_input():
  best = np.array([[2, 0, 0, 2, 2, 1, 2, 0]])
  logits = _one_hot_logits(best, 3)
  ids, lengths = ctc.ctc_greedy(logits, np.zeros((1, 8)), blank_id=2)
  assert ctc.row_to_list(ids[0], lengths[0]) == [0, 1, 0]
  ids2, _ = ctc.ctc_greedy(_log_softmax(logits), np.zeros((1, 8)), blank_id=2)
  np.testing.assert_array_equal(ids, ids2)


# ------------------------------------------------------------------------------ beam search


@pytest.mark.parametrize("seed", range(5))
def test_beam_one_equals_greedy_on_peaky_posteriors(seed):
  rng = np.random.default_rng(seed)
  t, v = int(rng.integers(5, 40)), int(rng.integers(3, 12))
  lp = _peaky_log_probs(rng, t, v, peak=0.9)
  (best, _), = ctc.ctc_prefix_beam_search(lp, beam_size=1)
  assert best == _greedy_one(lp)


@pytest.mark.parametrize("seed", range(3))
def test_beam_one_equals_greedy_on_random_posteriors_with_a_clear_winner(seed):
  """Random logits at low temperature: beam 1 is greedy once each frame is decisive."""
  rng = np.random.default_rng(100 + seed)
  lp = _log_softmax(rng.normal(size=(30, 6)) * 8.0)
  (best, _), = ctc.ctc_prefix_beam_search(lp, beam_size=1)
  assert best == _greedy_one(lp)


def test_beam_one_may_prefer_a_more_probable_prefix_than_greedy():
  """Beam 1 ranks prefixes by total probability, so on flat posteriors it can beat greedy.

  Frames (blank, a, b) = (.3, .4, .3), (.3, .3, .4): greedy reads "a b" (P = .16); "a" has
  P = .4*.3 + .4*.3 + .3*.3 = .33 (beam 1 sees .24 of it, having dropped the empty prefix).
  """
  lp = np.log(np.array([[0.3, 0.4, 0.3], [0.3, 0.3, 0.4]]))
  assert _greedy_one(lp) == (1, 2)
  (best, score), = ctc.ctc_prefix_beam_search(lp, beam_size=1)
  assert best == (1,)
  np.testing.assert_allclose(score, np.log(0.24))
  ll = ctc_log_likelihood(lp, [(1,), (1, 2)])
  np.testing.assert_allclose(ll, np.log([0.33, 0.16]), rtol=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_wider_beams_score_at_least_the_greedy_sequence(seed):
  """Scored with the model's own CTC likelihood, the beam's best beats the greedy sequence.

  (The beam's own score is only a lower bound of log P: on these flat posteriors it loses
  mass to pruned prefixes and can be below the greedy sequence's exact log P.)
  """
  rng = np.random.default_rng(200 + seed)
  lp = _log_softmax(rng.normal(size=(25, 7)) * 1.5)  # flat-ish: greedy is often suboptimal
  greedy = _greedy_one(lp)
  greedy_ll = ctc_log_likelihood(lp, [greedy])[0]
  for beam in (4, 16):
    hyps = ctc.ctc_prefix_beam_search(lp, beam_size=beam)
    assert len(hyps) == beam
    scores = [s for _, s in hyps]
    assert scores == sorted(scores, reverse=True)
    assert len({h for h, _ in hyps}) == beam  # distinct prefixes
    best, best_score = hyps[0]
    true_ll = ctc_log_likelihood(lp, [best])[0]
    assert best_score <= true_ll + 1e-4     # a beam score is a lower bound of log P
    assert true_ll >= greedy_ll - 1e-4
    assert best != greedy                    # flat posteriors: greedy is not the best here


@pytest.mark.parametrize("seed", range(3))
def test_wide_beam_scores_equal_optax_ctc_log_likelihood(seed):
  """Without pruning every prefix's score is its exact total probability -ctc_loss."""
  rng = np.random.default_rng(300 + seed)
  t, v = 6, 4  # at most 1 + 3 + ... + 3^6 = 1093 distinct prefixes: the beam keeps them all
  lp = _log_softmax(rng.normal(size=(t, v)) * 2.0)
  hyps = ctc.ctc_prefix_beam_search(lp, beam_size=2000, prune_threshold=None)
  seqs = [h for h, _ in hyps]
  expected = ctc_log_likelihood(lp, seqs)
  np.testing.assert_allclose([s for _, s in hyps], expected, rtol=1e-4, atol=1e-4)
  # The probabilities of all label sequences sum to one.
  np.testing.assert_allclose(np.exp([s for _, s in hyps]).sum(), 1.0, rtol=1e-9)
  # A narrower beam finds the same best hypothesis here, with a lower-bound score.
  (best, score), = ctc.ctc_prefix_beam_search(lp, beam_size=8, prune_threshold=None)[:1]
  assert best == hyps[0][0]
  assert expected[0] - 0.5 < score <= expected[0] + 1e-4


def test_normalize_and_pruning_options():
  rng = np.random.default_rng(7)
  logits = rng.normal(size=(12, 5)) * 3.0
  lp = _log_softmax(logits)
  a = ctc.ctc_prefix_beam_search(logits, 4, normalize=True)
  b = ctc.ctc_prefix_beam_search(lp, 4)
  assert [h for h, _ in a] == [h for h, _ in b]
  np.testing.assert_allclose([s for _, s in a], [s for _, s in b])
  # A harsh threshold still expands the frame's best token, so a hypothesis always exists.
  assert ctc.ctc_prefix_beam_search(lp, 4, prune_threshold=-1e-9)[0][0] == _greedy_one(lp)
  assert ctc.ctc_prefix_beam_search(np.zeros((0, 5)), 3) == [((), 0.0)]
  with pytest.raises(ValueError, match="beam_size"):
    ctc.ctc_prefix_beam_search(lp, 0)
  with pytest.raises(ValueError, match=r"\[T, V\]"):
    ctc.ctc_prefix_beam_search(lp[None], 2)


def test_batch_matches_single_utterances_and_ignores_padding():
  rng = np.random.default_rng(8)
  lp = _log_softmax(rng.normal(size=(3, 10, 5)) * 2.0)
  lengths = [10, 4, 0]
  paddings = (np.arange(10)[None] >= np.array(lengths)[:, None]).astype(np.float32)
  junk = lp.copy()
  junk[1, 4:] = _log_softmax(np.full((6, 5), 0.0) + np.eye(5)[1] * 50)
  out = ctc.ctc_beam_search_batch(junk, paddings, beam_size=3)
  assert len(out) == 3
  for b, n in enumerate(lengths):
    assert out[b] == ctc.ctc_prefix_beam_search(lp[b, :n], 3)
  assert out[2] == [((), 0.0)]


def test_lm_fusion_requires_optional_packages():
  if importlib.util.find_spec("pyctcdecode") and importlib.util.find_spec("kenlm"):
    pytest.skip("pyctcdecode and kenlm installed: the missing-dependency error is not reachable")
  with pytest.raises(ImportError, match="pyctcdecode"):
    ctc.build_lm_decoder(["<pad>", "|", "A", "B"], "/nonexistent/lm.arpa")
