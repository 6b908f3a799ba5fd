"""numpy CTC decoding: greedy, prefix beam (== decode/ctc.py) and n-gram fusion."""

from __future__ import annotations

import numpy as np
import pytest

from distill_jax import text as text_lib
from distill_jax.decode import ctc as jax_ctc
from distill_jax.decode import ngram
from distill_jax.ondevice import ctc
from distill_jax.ondevice.arpa import ArpaLM

VOCAB = [t for t, _ in sorted(text_lib.DEFAULT_VOCAB.items(), key=lambda kv: kv[1])]
TOK = text_lib.CharTokenizer()
SPECIALS = list(text_lib.SPECIAL_TOKENS)


def test_greedy_merges_repeats_and_drops_blanks():
  ids = [0, 7, 7, 0, 7, 5, 5, 0, 0]
  lp = np.log(np.full((len(ids), 6 + 26), 1e-3))
  lp[np.arange(len(ids)), ids] = 0.0
  assert ctc.greedy(lp, 0) == [7, 7, 5]


@pytest.mark.parametrize("beam,prune", [(1, -20.0), (4, -20.0), (8, None)])
def test_prefix_beam_equals_the_projects(rng, beam, prune):
  for _ in range(3):
    lp = ctc.log_softmax(rng.standard_normal((25, 8)) * 3)
    want = jax_ctc.ctc_prefix_beam_search(lp, beam, 0, prune)
    got = ctc.prefix_beam_search(lp, beam, 0, prune)
    assert [h[0] for h in got] == [h[0] for h in want]
    np.testing.assert_allclose([h[1] for h in got], [h[1] for h in want], rtol=1e-12)


def _frames(text: str, confusable: dict[int, tuple[str, str]]):
  """Log-probs spelling `text` (one frame per char, blank between), with frames `confusable`
  {char index: (a, b)} split 0.55/0.45 between two letters."""
  rows = []
  for i, ch in enumerate(text):
    p = np.full(len(VOCAB), 1e-4)
    if i in confusable:
      a, b = confusable[i]
      p[TOK.vocab[a]], p[TOK.vocab[b]] = 0.55, 0.45
    else:
      p[TOK.vocab["|" if ch == " " else ch]] = 1.0
    rows.append(p / p.sum())
    blank = np.full(len(VOCAB), 1e-4)
    blank[0] = 1.0
    rows.append(blank / blank.sum())
  return np.log(np.stack(rows))


def test_lm_fusion_prefers_the_words_the_lm_knows(tmp_path):
  sentences = ["THE CAT SAT", "THE CAT RAN", "A CAT SAT", "THE DOG SAT", "A DOG RAN",
               "THE CAT SAT DOWN", "A CAT RAN DOWN", "THE CAT SAT UP", "A DOG SAT", "THE CAT"]
  path = str(tmp_path / "lm.arpa")
  ngram.build_arpa(sentences, path, order=2)
  lm = ArpaLM.read(path)
  # Acoustically "THE CAX SAT" wins (X 0.55 vs T 0.45); the LM knows CAT.
  lp = _frames("THE CAT SAT", {6: ("X", "T")})
  kw = dict(vocabulary=VOCAB, skip_tokens=SPECIALS)
  plain = ctc.prefix_beam_search(lp, 8, 0)
  assert ctc.ids_to_text(plain[0][0], VOCAB, "|", SPECIALS) == "THE CAX SAT"
  fused = ctc.prefix_beam_search(lp, 8, 0, lm=lm, alpha=0.5, beta=0.0, **kw)
  assert ctc.ids_to_text(fused[0][0], VOCAB, "|", SPECIALS) == "THE CAT SAT"
  # alpha = beta = 0 ranks like no LM.
  zero = ctc.prefix_beam_search(lp, 8, 0, lm=lm, alpha=0.0, beta=0.0, **kw)
  assert [h[0] for h in zero] == [h[0] for h in plain]


def test_ids_to_text_matches_the_tokenizer():
  ids = TOK.encode("HELLO  WORLD") + [0, 1, 2, 3] + TOK.encode(" IT'S")
  assert ctc.ids_to_text(ids, VOCAB, "|", SPECIALS) == TOK.decode(ids)
