"""Interpolated Kneser-Ney n-gram estimation and its ARPA form."""

import math

import numpy as np
import pytest

from distill_jax.decode import ngram

SENTENCES = [
    "THE CAT SAT ON THE MAT", "THE DOG SAT ON THE LOG", "A CAT AND A DOG", "THE CAT RAN",
    "A DOG RAN ON THE MAT", "THE MAT WAS RED", "THE LOG WAS OLD", "A CAT SAT", "THE DOG RAN",
    "ON THE MAT THE CAT SAT", "OLD DOG", "RED CAT",
]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_every_context_sums_to_one(order):
  lm = ngram.train_kneser_ney(SENTENCES, order=order)
  targets = [w for w in lm.vocabulary if w != ngram.BOS]
  contexts = [[ngram.BOS], [ngram.BOS, "THE"], ["THE", "CAT"], ["SAT", "ON", "THE"],
              ["UNSEEN", "WORDS"], ["MAT", "THE", "DOG"], []]
  for context in contexts:
    total = sum(10.0 ** lm.log10_prob(w, context) for w in targets)
    assert abs(total - 1.0) < 1e-9, (context, total)  # exact up to float rounding


def test_bigram_matches_hand_computed_kneser_ney():
  """p(CAT | THE) on a two-sentence corpus, worked out by hand from the formulas."""
  lm = ngram.train_kneser_ney(["THE CAT", "THE DOG", "A CAT", "A BIRD", "THE"], order=2)
  # Unigram adjusted (continuation) counts: THE 1 (<s>), A 1, CAT 2 (THE, A), DOG 1, BIRD 1,
  # </s> 4 (CAT, DOG, BIRD, THE). Total 10, n1 = 4, n2 = 1, D1 = 4 / 6.
  d1 = 4 / 6
  vocab = 7  # THE A CAT DOG BIRD </s> <unk>
  gamma0 = d1 * 6 / 10
  p_cat = (2 - d1) / 10 + gamma0 / vocab
  # Bigrams are the top order (raw counts): <s> THE 3, <s> A 2, THE CAT 1, THE DOG 1,
  # THE </s> 1, A CAT 1, A BIRD 1, CAT </s> 2, DOG </s> 1, BIRD </s> 1. n1 = 7, n2 = 2,
  # D2 = 7 / 11. Context THE: total 3, 3 types.
  d2 = 7 / 11
  expected = (1 - d2) / 3 + d2 * 3 / 3 * p_cat
  assert math.isclose(10 ** lm.log10_prob("CAT", ["THE"]), expected, rel_tol=1e-9)
  # An unseen word falls back to <unk>.
  assert lm.log10_prob("ZEBRA", ["THE"]) == lm.log10_prob(ngram.UNK, ["THE"])


def test_arpa_file_reads_back_with_kenlm(tmp_path):
  kenlm = pytest.importorskip("kenlm")
  lm = ngram.train_kneser_ney(SENTENCES, order=3)
  path = str(tmp_path / "lm.arpa")
  lm.write_arpa(path)
  model = kenlm.Model(path)
  assert model.order == 3
  for sentence in ["THE CAT SAT ON THE LOG", "A RED DOG RAN", "MAT MAT MAT"]:
    ours = 0.0
    context = [ngram.BOS]
    for w in sentence.split() + [ngram.EOS]:
      ours += lm.log10_prob(w, context)
      context.append(w)
    np.testing.assert_allclose(model.score(sentence, bos=True, eos=True), ours, atol=1e-4)


def test_perplexity_prefers_in_domain_text():
  lm = ngram.train_kneser_ney(SENTENCES, order=3)
  assert ngram.corpus_perplexity(lm, ["THE CAT SAT ON THE MAT"]) < ngram.corpus_perplexity(
      lm, ["MAT ON SAT CAT THE THE"])


def test_errors():
  with pytest.raises(ValueError, match="no sentences"):
    ngram.train_kneser_ney([], order=2)
  with pytest.raises(ValueError, match="discount of order 2"):
    ngram.train_kneser_ney(["A B", "A B", "A C"], order=3)
