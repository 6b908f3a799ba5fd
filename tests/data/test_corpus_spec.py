"""Tests of the synthetic corpus spec (distill_jax/data/corpus_spec.py)."""

from __future__ import annotations

import pytest

from configs import corpus as corpus_configs
from distill_jax.data import corpus_spec


def test_unknown_config_key_is_named():
  with pytest.raises(corpus_spec.CorpusConfigError, match="trian_hours"):
    corpus_spec.resolve_config({"trian_hours": 1.0})
  with pytest.raises(KeyError, match="trian_hours"):
    corpus_configs.get_corpus_config(trian_hours=1.0)


@pytest.mark.parametrize("override, match", [
    ({"engines": ("festival",)}, "corpus.engines"),
    ({"sources": ()}, "corpus.sources"),
    ({"rate_range": (1.2, 0.9)}, "corpus.rate_range"),
    ({"min_words": 8, "max_words": 5}, "max_words=5 < min_words=8"),
    ({"dev_utterances": -1}, "corpus.dev_utterances"),
])
def test_invalid_values_are_named(override, match):
  with pytest.raises(corpus_spec.CorpusConfigError, match=match):
    corpus_spec.resolve_config(override)


def test_fingerprint_covers_content_keys_only():
  base = corpus_spec.resolve_config({})
  assert corpus_spec.fingerprint(base) == corpus_spec.fingerprint(
      corpus_spec.resolve_config({"num_workers": 7}))
  assert corpus_spec.fingerprint(base) != corpus_spec.fingerprint(
      corpus_spec.resolve_config({"seed": 1}))
  # A ConfigDict (lists vs tuples) and a plain dict of the same values agree.
  assert corpus_spec.fingerprint(corpus_spec.resolve_config(
      corpus_configs.get_corpus_config("default"))) == corpus_spec.fingerprint(base)
  assert corpus_spec.config_diff(corpus_spec.content_config(base), corpus_spec.content_config(
      corpus_spec.resolve_config({"max_words": 7}))) == ["max_words (30 -> 7)"]
