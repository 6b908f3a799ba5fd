"""Decoder selection in evaluation: greedy, beam, and beam search with n-gram LM fusion."""

import ml_collections
import numpy as np
import pytest

from distill_jax.train import evaluate
from distill_jax import text as text_lib
from distill_jax.decode import ngram


def _posteriors(tokenizer, frames):
  """[T, V] log-probabilities from per-frame {token: probability} dicts (rest on blank)."""
  lp = np.full((len(frames), tokenizer.vocab_size), 1e-6)
  for t, dist in enumerate(frames):
    for tok, p in dist.items():
      lp[t, tokenizer.vocab[tok]] = p
    lp[t, tokenizer.blank_id] += max(0.0, 1.0 - sum(dist.values()))
  lp /= lp.sum(axis=1, keepdims=True)
  return np.log(lp).astype(np.float32)


def _spell(text, ambiguous=None):
  """One frame per character, a blank frame between characters; `ambiguous` maps a position
  of `text` to a {token: p} dict used instead of a sure character."""
  frames = []
  for i, ch in enumerate(text):
    tok = "|" if ch == " " else ch
    frames.append((ambiguous or {}).get(i, {tok: 0.98}))
    frames.append({})
  return frames


def _eval_cfg(**kw):
  c = ml_collections.ConfigDict(dict(decoder="greedy", beam_size=16, lm="", lm_alpha=0.5,
                                     lm_beta=1.0))
  c.update(kw)
  return c


def test_greedy_is_batched_and_beam_decodes_text():
  tok = text_lib.CharTokenizer()
  assert evaluate.make_decoder(_eval_cfg(), tok) is None
  beam = evaluate.make_decoder(_eval_cfg(decoder="beam"), tok)
  assert beam(_posteriors(tok, _spell("THE CAT"))) == "THE CAT"


def test_lm_fusion_fixes_an_acoustically_ambiguous_word(tmp_path):
  pytest.importorskip("pyctcdecode")
  pytest.importorskip("kenlm")
  tok = text_lib.CharTokenizer()
  sentences = ["THE CAT SAT", "THE CAT RAN", "A CAT SAT ON THE MAT", "THE DOG SAT",
               "THE DOG RAN", "A DOG", "THE MAT", "ON THE MAT", "A CAT", "THE RAT RAN"]
  lm = ngram.train_kneser_ney(sentences, order=3)
  arpa = str(tmp_path / "lm.arpa")
  lm.write_arpa(arpa)
  # 'C' of CAT sounds a little more like 'K': greedy and plain beam say KAT.
  log_probs = _posteriors(tok, _spell("THE CAT SAT", {4: {"K": 0.55, "C": 0.43}}))
  assert evaluate.make_decoder(_eval_cfg(decoder="beam"), tok)(log_probs) == "THE KAT SAT"
  fused = evaluate.make_decoder(_eval_cfg(decoder="beam_lm", lm=arpa, lm_beta=0.0), tok)
  assert fused(log_probs) == "THE CAT SAT"


def test_bad_decoder_settings_are_named():
  tok = text_lib.CharTokenizer()
  with pytest.raises(ValueError, match="config.eval.decoder='viterbi'"):
    evaluate.make_decoder(_eval_cfg(decoder="viterbi"), tok)
  with pytest.raises(FileNotFoundError, match="config.eval.lm"):
    evaluate.make_decoder(_eval_cfg(decoder="beam_lm", lm="/nonexistent.arpa"), tok)
