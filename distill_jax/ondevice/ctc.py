"""CTC decoding in numpy: greedy, prefix beam search, and beam search with an n-gram LM.

`prefix_beam_search` is `decode/ctc.py::ctc_prefix_beam_search` (same recursion over p_b/p_nb,
same pruning and tie-breaking), so without an LM both return the same hypotheses
(tests/ondevice/test_ctc.py). With an `ArpaLM` (shallow fusion over words, as pyctcdecode does
for `config.eval.decoder='beam_lm'`), prefixes are ranked by

    log P_ctc(prefix) + alpha * ln P_lm(completed words) + beta * (number of completed words)

where a word is completed by the word-delimiter token; at the end the last partial word and
</s> are scored too. (pyctcdecode also scores partial words against its unigram list; this
decoder does not, so its beams can differ from pyctcdecode's for the same alpha and beta.)
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from distill_jax.ondevice.arpa import ArpaLM, BOS, EOS, LN10

_NEG_INF = -math.inf


def log_softmax(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float64)
  m = np.max(x, axis=-1, keepdims=True)
  return x - m - np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True))


def greedy(log_probs: np.ndarray, blank_id: int) -> list[int]:
  """[T, V] -> token ids of the best path (repeats merged, blanks dropped)."""
  best = np.argmax(np.asarray(log_probs), axis=-1)
  keep = (best != blank_id) & np.concatenate([[True], best[1:] != best[:-1]])
  return best[keep].astype(int).tolist()


def _logaddexp(a: float, b: float) -> float:
  if a == _NEG_INF:
    return b
  if b == _NEG_INF:
    return a
  if a > b:
    return a + math.log1p(math.exp(b - a))
  return b + math.log1p(math.exp(a - b))


class _Words:
  """Per-prefix LM state: completed words, the partial word, their fused LM score."""

  def __init__(self, lm: ArpaLM | None, vocabulary: Sequence[str], delimiter_id: int,
               skip_ids: set[int], alpha: float, beta: float):
    self.lm, self.vocab, self.delim, self.skip = lm, vocabulary, delimiter_id, skip_ids
    self.alpha, self.beta = alpha, beta
    self.cache: dict[tuple[int, ...], tuple[tuple[str, ...], str, float]] = {
        (): ((), "", 0.0)}

  def state(self, prefix: tuple[int, ...]) -> tuple[tuple[str, ...], str, float]:
    """(words, partial word, alpha * ln P_lm(words) + beta * len(words))."""
    s = self.cache.get(prefix)
    if s is not None:
      return s
    words, partial, score = self.state(prefix[:-1])
    c = prefix[-1]
    if c == self.delim:
      if partial:
        score = score + self._word_score(partial, words)
        words = words + (partial,)
        partial = ""
    elif c not in self.skip:
      partial = partial + self.vocab[c]
    s = self.cache[prefix] = (words, partial, score)
    return s

  def _word_score(self, word: str, history: tuple[str, ...]) -> float:
    lp = self.lm.log10_prob(word, (BOS,) + history) * LN10 if self.lm is not None else 0.0
    return self.alpha * lp + self.beta

  def final(self, prefix: tuple[int, ...]) -> float:
    """The fused LM score of a finished hypothesis (last word and </s> included)."""
    words, partial, score = self.state(prefix)
    if partial:
      score += self._word_score(partial, words)
      words = words + (partial,)
    if self.lm is not None:
      score += self.alpha * self.lm.log10_prob(EOS, (BOS,) + words) * LN10
    return score


def prefix_beam_search(log_probs: np.ndarray, beam_size: int, blank_id: int = 0,
                       prune_threshold: float | None = -20.0, *, lm: ArpaLM | None = None,
                       vocabulary: Sequence[str] | None = None, word_delimiter: str = "|",
                       skip_tokens: Sequence[str] = (), alpha: float = 0.5,
                       beta: float = 1.0) -> list[tuple[tuple[int, ...], float]]:
  """CTC prefix beam search for one utterance, optionally fused with a word n-gram LM.

  Args:
    log_probs: [T, V] log-probabilities.
    beam_size: prefixes kept after each frame.
    blank_id: the blank id.
    prune_threshold: only tokens with log-prob >= this are expanded (the best always is);
      None expands all (exact CTC scores).
    lm: an ARPA model; None = no LM (then vocabulary, alpha, beta are unused).
    vocabulary: token strings by id (needed with `lm`).
    word_delimiter: the token ending a word.
    skip_tokens: tokens that are no characters (special tokens).
    alpha: LM weight; beta: bonus per word.

  Returns:
    Up to `beam_size` (token ids, score) best first; score = CTC log-prob (+ fused LM terms).
  """
  if beam_size < 1:
    raise ValueError(f"beam_size must be >= 1, got {beam_size}")
  lp = np.asarray(log_probs, np.float64)
  if lp.ndim != 2:
    raise ValueError(f"log_probs must be [T, V], got shape {lp.shape}")
  words = None
  if lm is not None:
    if vocabulary is None:
      raise ValueError("beam search with an LM needs the vocabulary")
    skip = {i for i, t in enumerate(vocabulary) if t in set(skip_tokens)} | {blank_id}
    words = _Words(lm, vocabulary, list(vocabulary).index(word_delimiter), skip, alpha, beta)
  beams: dict[tuple[int, ...], list[float]] = {(): [0.0, _NEG_INF]}
  for frame in lp:
    if prune_threshold is None:
      tokens = range(frame.shape[0])
    else:
      tokens = np.flatnonzero(frame >= min(prune_threshold, float(frame.max()))).tolist()
    nxt: dict[tuple[int, ...], list[float]] = {}

    def slot(prefix):
      s = nxt.get(prefix)
      if s is None:
        s = nxt[prefix] = [_NEG_INF, _NEG_INF]
      return s

    for prefix, (p_b, p_nb) in beams.items():
      p_total = _logaddexp(p_b, p_nb)
      last = prefix[-1] if prefix else None
      for c in tokens:
        p_c = float(frame[c])
        if p_c == _NEG_INF:
          continue
        if c == blank_id:
          s = slot(prefix)
          s[0] = _logaddexp(s[0], p_total + p_c)
        elif c == last:
          if p_nb > _NEG_INF:
            s = slot(prefix)
            s[1] = _logaddexp(s[1], p_nb + p_c)
          if p_b > _NEG_INF:
            s = slot(prefix + (c,))
            s[1] = _logaddexp(s[1], p_b + p_c)
        else:
          s = slot(prefix + (c,))
          s[1] = _logaddexp(s[1], p_total + p_c)
    if words is None:
      key = lambda kv: (-_logaddexp(*kv[1]), kv[0])
    else:
      key = lambda kv: (-(_logaddexp(*kv[1]) + words.state(kv[0])[2]), kv[0])
    beams = dict(sorted(nxt.items(), key=key)[:beam_size])
  if words is None:
    hyps = [(p, _logaddexp(*s)) for p, s in beams.items()]
  else:
    hyps = [(p, _logaddexp(*s) + words.final(p)) for p, s in beams.items()]
  hyps = [h for h in hyps if h[1] > _NEG_INF]
  hyps.sort(key=lambda h: (-h[1], h[0]))
  return hyps


def ids_to_text(ids: Sequence[int], vocabulary: Sequence[str], word_delimiter: str,
                skip_tokens: Sequence[str]) -> str:
  """Ids -> text as `text.CharTokenizer.decode`: special tokens dropped, delimiter -> space."""
  skip = set(skip_tokens)
  chars = []
  for i in ids:
    tok = vocabulary[int(i)]
    if tok in skip:
      continue
    chars.append(" " if tok == word_delimiter else tok)
  return " ".join("".join(chars).split())
