"""The runtime's ARPA reader scores exactly as the project's n-gram model."""

from __future__ import annotations

import math

import pytest

from distill_jax.decode import ngram
from distill_jax.ondevice.arpa import ArpaError, ArpaLM

SENTENCES = ["THE CAT SAT ON THE MAT", "THE DOG SAT ON THE LOG", "A CAT AND A DOG",
             "THE CAT RAN", "A DOG RAN ON THE MAT", "THE MAT WAS RED", "THE CAT SAT",
             "A RED DOG SAT ON A CAT", "THE LOG WAS ON THE MAT", "A CAT SAT ON A LOG",
             "THE DOG RAN"]


def test_scores_equal_the_projects_model(tmp_path):
  path = str(tmp_path / "lm3.arpa")
  want = ngram.build_arpa(SENTENCES, path, order=3)
  lm = ArpaLM.read(path)
  assert lm.order == 3
  for ctx, w in [(["<s>"], "THE"), (["<s>", "THE"], "CAT"), (["THE", "CAT"], "SAT"),
                 (["CAT", "SAT"], "RED"), (["A"], "ZEBRA"), (["MAT"], "</s>")]:
    # ARPA stores 6 decimals.
    assert lm.log10_prob(w, ctx) == pytest.approx(want.log10_prob(w, ctx), abs=2e-6)
  s = lm.score_words(["THE", "CAT"], eos=True)
  manual = sum(want.log10_prob(w, c) for w, c in
               [("THE", ["<s>"]), ("CAT", ["<s>", "THE"]), ("</s>", ["THE", "CAT"])])
  assert s == pytest.approx(manual * math.log(10), abs=1e-4)


def test_malformed_files_are_named(tmp_path):
  bad = tmp_path / "bad.arpa"
  bad.write_text("\\data\\\nngram 1=2\n\n\\1-grams:\n-1.0\tA\n\\end\\\n")
  with pytest.raises(ArpaError, match="announces 2 1-grams, the file lists 1"):
    ArpaLM.read(str(bad))
  bad.write_text("\\data\\\nngram 1=1\n\n\\1-grams:\n-1.0\tA\n")
  with pytest.raises(ArpaError, match="no \\\\end\\\\ marker"):
    ArpaLM.read(str(bad))
  bad.write_text("\\data\\\nngram 1=1\n\n\\1-grams:\nx\tA\n\\end\\\n")
  with pytest.raises(ArpaError, match="bad.arpa:5: bad number"):
    ArpaLM.read(str(bad))
  with pytest.raises(ArpaError, match="not found"):
    ArpaLM.read(str(tmp_path / "none.arpa"))
