"""Tests of the synthetic corpus's sentence lists (distill_jax/data/sentences.py)."""

from __future__ import annotations

import os

from distill_jax import text as text_lib
from distill_jax.data import corpus_spec
from distill_jax.data import sentences


def test_sentences_normalized_tokenizable_and_exclude_eval_text():
  cfg = corpus_spec.resolve_config({})
  kept, rejected = sentences.load_sentences(cfg)
  assert len(kept) > 20000
  tok = text_lib.CharTokenizer()
  excluded_ids = {f"LJ001-{i:04d}" for i in range(1, 33)}
  eval_texts = set()
  with open(os.path.join(sentences.DEFAULT_TEXT_DIR, sentences.EVAL_EXCLUDE_FILE)) as f:
    for line in f:
      eval_texts.add(text_lib.normalize(line.rstrip("\n").split("\t")[2]))
  for s in kept:
    assert text_lib.normalize(s.text) == s.text
    assert text_lib.normalize(s.tts_text) == s.text
    tok.encode(s.text)
    assert s.source_id not in excluded_ids
    assert s.text not in eval_texts
  assert len({s.text for s in kept}) == len(kept)
  assert {s.source for s in kept} == set(sentences.SOURCES)
  rejected_ids = {r["source_id"] for r in rejected if r["reason"].startswith("real-speech")}
  assert excluded_ids <= rejected_ids


def test_speakable_text():
  assert sentences.speakable_text('"Well-known," he said; 21 dogs\' bowls (Zoe).') == (
      "well known, he said; twenty one dogs' bowls Zoe.")
  assert sentences.speakable_text("Caf\u00e9 at 3rd St") == "cafe at third St"


def test_every_rejection_reason_is_listed(tmp_path):
  """A tiny text folder: each bad row is left out with its reason, the good ones kept."""
  rows = [
      ("a1", "The birch canoe slid on the smooth planks."),  # kept
      ("a2", "Mr. Smith went to town today."),  # abbreviation
      ("a3", "The NASA rocket rose at dawn."),  # all-caps word
      ("a4", "It cost $5 at the corner shop."),  # currency sign
      ("a5", "Too short."),  # fewer than min_words (2 < 3)
      ("a6", "the birch canoe slid on the smooth planks"),  # duplicate after normalization
      ("a7", "Nobody reads this line aloud here."),  # eval id
      ("a8", "A quiet voice read the test sentence."),  # eval text (other id)
      ("a9", "She sold 21 shells by the shore."),  # kept, digits spelled out for the engines
      ("a10", "one two three four five six seven eight nine ten eleven"),  # > max_words
  ]
  (tmp_path / "arctic.tsv").write_text("".join(f"{i}\t{t}\n" for i, t in rows))
  (tmp_path / sentences.EVAL_EXCLUDE_FILE).write_text(
      "x\ta7\tsomething else\nx\tzz\ta quiet voice read the test sentence\n")
  cfg = corpus_spec.resolve_config({"text_dir": str(tmp_path), "sources": ("arctic",),
                                    "min_words": 3, "max_words": 10})
  kept, rejected = sentences.load_sentences(cfg)
  assert [(s.source_id, s.text, s.tts_text) for s in kept] == [
      ("a1", "THE BIRCH CANOE SLID ON THE SMOOTH PLANKS",
       "The birch canoe slid on the smooth planks."),
      ("a9", "SHE SOLD TWENTY ONE SHELLS BY THE SHORE",
       "She sold twenty one shells by the shore."),
  ]
  assert {r["source_id"]: r["reason"] for r in rejected} == {
      "a2": "abbreviation", "a3": "all-caps word", "a4": "currency sign",
      "a5": "fewer than min_words", "a6": "duplicate", "a7": "real-speech eval sentence (id)",
      "a8": "real-speech eval sentence (text)", "a10": "more than max_words"}
  assert all(r["source"] == "arctic" and r["text"] == dict(rows)[r["source_id"]]
             for r in rejected)
