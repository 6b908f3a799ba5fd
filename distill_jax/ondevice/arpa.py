"""An ARPA n-gram language model read in plain Python (no kenlm), for shallow fusion.

Reads the text format that `decode/ngram.py` writes (and KenLM's lmplz, SRILM): a `\\data\\`
header with `ngram k=count` lines, then `\\k-grams:` sections of
`log10_prob <TAB> w1 ... wk [<TAB> log10_backoff]`, then `\\end\\`. Scores follow the back-off
rule: log10 p(w | h) = log10 p*(h w) if the k-gram is listed, else log10 bow(h) +
log10 p(w | h minus its first word); an unknown word is scored as <unk> (or `unk_log10` when
the model has no <unk>).
"""

from __future__ import annotations

import math
import os
from typing import Sequence

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
LN10 = math.log(10.0)


class ArpaError(ValueError):
  """A malformed ARPA file; the message names the file and line."""


class ArpaLM:
  """order, probs[k-1] = {k-gram: log10 p}, backoffs[k-1] = {k-gram: log10 bow}."""

  def __init__(self, order: int, probs: list[dict], backoffs: list[dict],
               unk_log10: float = -10.0):
    self.order = order
    self.probs = probs
    self.backoffs = backoffs
    self.unk_log10 = unk_log10

  @classmethod
  def read(cls, path: str) -> "ArpaLM":
    path = os.fspath(path)
    if not os.path.isfile(path):
      raise ArpaError(f"{path}: ARPA file not found")
    counts: dict[int, int] = {}
    probs: list[dict] = []
    backoffs: list[dict] = []
    section = None  # 'data' | k | 'end'
    with open(path, encoding="utf-8") as f:
      for lineno, raw in enumerate(f, 1):
        line = raw.strip()
        if not line:
          continue
        where = f"{path}:{lineno}"
        if line == "\\data\\":
          section = "data"
          continue
        if line == "\\end\\":
          section = "end"
          break
        if line.startswith("\\") and line.endswith("-grams:"):
          try:
            k = int(line[1:-len("-grams:")])
          except ValueError:
            raise ArpaError(f"{where}: bad section header {line!r}") from None
          if k not in counts:
            raise ArpaError(f"{where}: section {k}-grams not announced in \\data\\")
          while len(probs) < k:
            probs.append({})
            backoffs.append({})
          section = k
          continue
        if section == "data":
          if not line.startswith("ngram ") or "=" not in line:
            raise ArpaError(f"{where}: expected 'ngram k=count' in \\data\\, got {line!r}")
          k, n = line[len("ngram "):].split("=", 1)
          counts[int(k)] = int(n)
          continue
        if not isinstance(section, int):
          raise ArpaError(f"{where}: line outside any section: {line!r:.60}")
        parts = line.split()
        k = section
        if len(parts) not in (k + 1, k + 2):
          raise ArpaError(f"{where}: a {k}-gram line needs {k + 1} or {k + 2} fields, got "
                          f"{len(parts)}: {line!r:.60}")
        try:
          p = float(parts[0])
          bow = float(parts[k + 1]) if len(parts) == k + 2 else None
        except ValueError:
          raise ArpaError(f"{where}: bad number in {line!r:.60}") from None
        gram = tuple(parts[1:k + 1])
        probs[k - 1][gram] = p
        if bow is not None:
          backoffs[k - 1][gram] = bow
    if section != "end":
      raise ArpaError(f"{path}: no \\end\\ marker (truncated file?)")
    if not counts:
      raise ArpaError(f"{path}: no \\data\\ section")
    order = max(counts)
    for k, n in counts.items():
      have = len(probs[k - 1]) if k <= len(probs) else 0
      if have != n:
        raise ArpaError(f"{path}: \\data\\ announces {n} {k}-grams, the file lists {have}")
    return cls(order, probs, backoffs)

  def log10_prob(self, word: str, context: Sequence[str]) -> float:
    """log10 p(word | context), context = the preceding words (oldest first)."""
    if (word,) not in self.probs[0]:
      if (UNK,) not in self.probs[0]:
        return self.unk_log10
      word = UNK
    context = tuple(context)[-(self.order - 1):] if self.order > 1 else ()
    backoff = 0.0
    while True:
      gram = context + (word,)
      p = self.probs[len(gram) - 1].get(gram)
      if p is not None:
        return p + backoff
      backoff += self.backoffs[len(context) - 1].get(context, 0.0) if context else 0.0
      context = context[1:]

  def score_words(self, words: Sequence[str], eos: bool = False) -> float:
    """Natural-log probability of `words` after <s> (and of </s> when `eos`)."""
    ctx = [BOS]
    total = 0.0
    for w in list(words) + ([EOS] if eos else []):
      total += self.log10_prob(w, ctx)
      ctx.append(w)
    return total * LN10
