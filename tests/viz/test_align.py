"""CTC forced alignment on synthetic posteriorgrams whose best path is known."""

import numpy as np
import pytest

from distill_jax.viz import align

V, BLANK = 6, 0


def _posteriorgram(frame_tokens, peak=0.9):
  """log-probs [T, V]: each frame puts `peak` on its token, the rest spread evenly."""
  lp = np.full((len(frame_tokens), V), (1 - peak) / (V - 1))
  lp[np.arange(len(frame_tokens)), frame_tokens] = peak
  return np.log(lp)


def test_recovers_the_path_the_posteriorgram_encodes():
  # Frames: _ _ 1 1 _ 2 2 2 _ 2 3 _   (labels 1 2 2 3: the repeated 2 needs the blank)
  frames = [0, 0, 1, 1, 0, 2, 2, 2, 0, 2, 3, 0]
  labels = [1, 2, 2, 3]
  states, score = align.forced_align(_posteriorgram(frames), labels, BLANK)
  # State ids: blanks even, label u at 2u + 1.
  assert states.tolist() == [0, 0, 1, 1, 2, 3, 3, 3, 4, 5, 7, 8]
  np.testing.assert_allclose(score, len(frames) * np.log(0.9), rtol=1e-5)
  spans = align.token_spans(states, len(labels))
  assert spans.tolist() == [[2, 4], [5, 8], [9, 10], [10, 11]]


def test_follows_the_transcript_not_the_argmax():
  # The argmax says "1 4", but the transcript is "1 2": frame 3 must be assigned to label 2.
  frames = [1, 1, 0, 4, 0]
  lp = _posteriorgram(frames)
  lp[3, 2] = np.log(0.05)  # label 2 is unlikely there, but it is the only way to emit it
  states, _ = align.forced_align(lp, [1, 2], BLANK)
  assert align.token_spans(states, 2).tolist()[1][0] in (2, 3, 4)
  assert set(states.tolist()) <= {0, 1, 2, 3, 4}


def test_brute_force_agreement_on_random_posteriorgrams():
  rng = np.random.default_rng(0)
  for trial in range(5):
    t = 6
    labels = [1, 2] if trial % 2 else [3, 3]
    lp = np.log(rng.dirichlet(np.ones(V), size=t))
    states, score = align.forced_align(lp, labels, BLANK)
    # Enumerate every frame path over the vocabulary that collapses to the labels.
    best = -np.inf
    for path in np.ndindex(*(V,) * t):
      collapsed = [p for i, p in enumerate(path) if p != BLANK and (i == 0 or p != path[i - 1])]
      if collapsed == labels:
        best = max(best, sum(lp[i, p] for i, p in enumerate(path)))
    np.testing.assert_allclose(score, best, rtol=1e-5)


def test_word_spans_and_errors():
  frames = [0, 1, 2, 0, 5, 0, 3, 3, 0]
  labels = [1, 2, 5, 3]  # "ab|c" with 5 as the word delimiter
  states, _ = align.forced_align(_posteriorgram(frames), labels, BLANK)
  words = align.word_spans(labels, align.token_spans(states, 4), 5,
                           {1: "A", 2: "B", 3: "C", 5: "|"})
  assert words == [("AB", 1, 3), ("C", 6, 8)]
  with pytest.raises(ValueError, match="needs at least 3 frames"):
    align.forced_align(_posteriorgram([1, 1]), [1, 1], BLANK)
  with pytest.raises(ValueError, match="blank"):
    align.forced_align(_posteriorgram([1, 1]), [0], BLANK)
