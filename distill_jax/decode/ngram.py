"""Word n-gram language models for shallow fusion: interpolated Kneser-Ney, written as ARPA.

KenLM's `lmplz` (the usual way to estimate an ARPA file) is a C++ binary that pip does not
install, so the estimator lives here; `kenlm` (pip) only reads the result, and pyctcdecode
uses it during CTC beam search (`decode/ctc.py::build_lm_decoder`).

Model (Chen & Goodman 1998, interpolated Kneser-Ney with one discount per order). Every sentence
is wrapped as <s> w_1 ... w_n </s>. With counts a_k of k-grams:

- the highest order uses raw counts; a lower order k uses continuation counts
  a_k(h w) = |{v : c(v h w) > 0}|, except for k-grams that start with <s>, which nothing can
  precede, so they keep their raw counts (as KenLM does);
- D_k = n1 / (n1 + 2 n2) from the numbers of k-grams with adjusted count 1 and 2;
- p_k(w | h) = max(a_k(h w) - D_k, 0) / a_k(h .) + gamma(h) p_{k-1}(w | h'), with h' = h minus
  its first word and gamma(h) = D_k N1+(h .) / a_k(h .) (the mass taken by discounting);
- p_1(w) interpolates with the uniform distribution over the vocabulary (+ <unk>).

Because the model is interpolated, an ARPA file represents it exactly: a seen k-gram stores the
interpolated p_k(w | h) and a context h stores the back-off weight gamma(h), so that an unseen
(h, w) gets gamma(h) p_{k-1}(w | h') as in the formula. `NgramLM.log10_prob` evaluates that back-off
rule directly, which the tests use to check that every context's distribution sums to one.
"""

from __future__ import annotations

import collections
import math
import os
from typing import Iterable

from distill_jax.ondevice import arpa

BOS, EOS, UNK = arpa.BOS, arpa.EOS, arpa.UNK

Ngram = tuple[str, ...]


class NgramLM(arpa.ArpaLM):
  """An interpolated Kneser-Ney model in back-off form (scored by `ondevice.arpa.ArpaLM`'s
  back-off rule, the runtime's; this class adds training and writing ARPA).

  Attributes:
    order: n.
    probs: per order k (index k - 1), {k-gram: log10 p(w | h)}.
    backoffs: per order k < n, {k-gram: log10 gamma(k-gram as a context)}.
  """

  @property
  def vocabulary(self) -> list[str]:
    return sorted(w for (w,) in self.probs[0])

  def write_arpa(self, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
      f.write("\n\\data\\\n")
      for k in range(self.order):
        f.write(f"ngram {k + 1}={len(self.probs[k])}\n")
      for k in range(self.order):
        f.write(f"\n\\{k + 1}-grams:\n")
        bows = self.backoffs[k] if k < self.order - 1 else {}
        for gram in sorted(self.probs[k]):
          line = f"{self.probs[k][gram]:.6f}\t{' '.join(gram)}"
          if gram in bows:
            line += f"\t{bows[gram]:.6f}"
          f.write(line + "\n")
      f.write("\n\\end\\\n")


def _discount(counts: dict[Ngram, int], order: int) -> float:
  n1 = sum(1 for c in counts.values() if c == 1)
  n2 = sum(1 for c in counts.values() if c == 2)
  if n1 == 0 or n2 == 0:
    raise ValueError(
        f"cannot estimate the Kneser-Ney discount of order {order} (n1={n1}, n2={n2}): the "
        "text is too small for this order")
  return n1 / (n1 + 2.0 * n2)


def train_kneser_ney(sentences: Iterable[str], order: int = 3) -> NgramLM:
  """Estimates an interpolated Kneser-Ney model from sentences of space-separated words."""
  if order < 1:
    raise ValueError(f"order must be >= 1, got {order}")
  raw: dict[Ngram, int] = collections.Counter()
  num_sentences = 0
  for sentence in sentences:
    words = (BOS,) + tuple(sentence.split()) + (EOS,)
    num_sentences += 1
    for k in range(1, order + 1):
      for i in range(len(words) - k + 1):
        raw[words[i:i + k]] += 1
  if not num_sentences:
    raise ValueError("no sentences to train the language model on")

  # Adjusted counts per order: raw at the top and for <s>-initial grams, else continuation.
  adjusted: list[dict[Ngram, int]] = [dict() for _ in range(order)]
  for gram, c in raw.items():
    if len(gram) == order or gram[0] == BOS:
      adjusted[len(gram) - 1][gram] = c
  for gram in raw:
    if len(gram) >= 2:
      suffix = gram[1:]
      if suffix[0] != BOS:
        adjusted[len(suffix) - 1][suffix] = adjusted[len(suffix) - 1].get(suffix, 0) + 1
  adjusted[0].pop((BOS,), None)  # <s> is never predicted

  probs: list[dict[Ngram, float]] = [dict() for _ in range(order)]
  backoffs: list[dict[Ngram, float]] = [dict() for _ in range(order)]
  gammas: list[dict[Ngram, float]] = [dict() for _ in range(order)]  # by context, order k
  for k in range(1, order + 1):
    counts = adjusted[k - 1]
    d = _discount(counts, k)
    totals: dict[Ngram, int] = collections.Counter()
    types: dict[Ngram, int] = collections.Counter()
    for gram, c in counts.items():
      totals[gram[:-1]] += c
      types[gram[:-1]] += 1
    gamma = {h: d * types[h] / totals[h] for h in totals}
    gammas[k - 1] = gamma
    if k == 1:
      vocab = [g[0] for g in counts] + ([UNK] if (UNK,) not in counts else [])
      uniform = 1.0 / len(vocab)
      total = totals[()]
      for w in vocab:
        p = max(counts.get((w,), 0) - d, 0.0) / total + gamma[()] * uniform
        probs[0][(w,)] = math.log10(p)
      probs[0][(BOS,)] = -99.0
      continue
    for gram, c in counts.items():
      h = gram[:-1]
      lower = 10.0 ** _interpolated(probs, gammas, gram[1:])
      probs[k - 1][gram] = math.log10(max(c - d, 0.0) / totals[h] + gamma[h] * lower)
  for k in range(1, order):
    for h, g in gammas[k].items():  # contexts of order k + 1 grams are k-grams
      backoffs[k - 1][h] = math.log10(g)
  # Every context must itself be a listed gram (ARPA readers require it).
  for k in range(1, order):
    for h in backoffs[k - 1]:
      if h not in probs[k - 1]:
        raise AssertionError(f"context {h} has a back-off but no probability")
  return NgramLM(order, probs, backoffs)


def _interpolated(probs, gammas, gram: Ngram) -> float:
  """log10 p_k(w | h) of a lower-order gram, seen or not (used while estimating)."""
  k = len(gram)
  p = probs[k - 1].get(gram)
  if p is not None:
    return p
  h = gram[:-1]
  g = gammas[k - 1].get(h, 1.0) if k > 1 else 1.0
  return math.log10(g) + _interpolated(probs, gammas, gram[1:])


def build_arpa(sentences: Iterable[str], path: str, order: int = 3) -> NgramLM:
  """Estimates a model on `sentences` and writes it to `path` (ARPA; atomically)."""
  lm = train_kneser_ney(sentences, order=order)
  tmp = path + ".tmp"
  lm.write_arpa(tmp)
  os.replace(tmp, path)
  return lm


def corpus_perplexity(lm: NgramLM, sentences: Iterable[str]) -> float:
  """Perplexity over words and </s> of held-out sentences."""
  total, count = 0.0, 0
  for sentence in sentences:
    words = sentence.split() + [EOS]
    context = [BOS]
    for w in words:
      total += lm.log10_prob(w, context)
      context.append(w)
      count += 1
  return 10.0 ** (-total / max(count, 1))
