"""Tests of distill_jax/text/whisper.py: Whisper's English text -> the project's convention.

The Whisper strings are of the kinds Whisper tiny.en writes (the first ones are its outputs on
the real clips in data/real_english, see benchmarks/whisper_reference.py); each expectation is
the LibriSpeech-style label a reader would write for the same words.
"""

import pytest

from distill_jax import text
from distill_jax.text.whisper import normalize_whisper


@pytest.mark.parametrize("whisper,expected", [
    # Real tiny.en outputs (goforward, cards, LJ Speech).
    (" Go forward 10 meters.", "GO FORWARD TEN METERS"),
    (" 10 of clubs.", "TEN OF CLUBS"),
    (" Printing, in the only sense with which we are at present concerned, differs from most if "
     "not from all the arts and crafts represented in the exhibition.",
     "PRINTING IN THE ONLY SENSE WITH WHICH WE ARE AT PRESENT CONCERNED DIFFERS FROM MOST IF NOT "
     "FROM ALL THE ARTS AND CRAFTS REPRESENTED IN THE EXHIBITION"),
    # Numbers text.normalize already spells, reached through Whisper's formatting.
    ("It's 10 o'clock in 1990.", "IT'S TEN O'CLOCK IN NINETEEN NINETY"),
    ("The 21st century, 3.5% of 1,000 people.",
     "THE TWENTY FIRST CENTURY THREE POINT FIVE PERCENT OF ONE THOUSAND PEOPLE"),
    ("A 10-year-old boy.", "A TEN YEAR OLD BOY"),
    # Forms added here.
    ("Mr. Smith paid $5.50 at 10:30 a.m.",
     "MISTER SMITH PAID FIVE DOLLARS FIFTY CENTS AT TEN THIRTY A M"),
    ("$1, £2.01 and €100.", "ONE DOLLAR TWO POUNDS ONE PENNY AND ONE HUNDRED EUROS"),
    ("$3 million", "THREE MILLION DOLLARS"),
    ("In the 1990s and the '80s, the 1800s and 2000s.",
     "IN THE NINETEEN NINETIES AND THE EIGHTIES THE EIGHTEEN HUNDREDS AND TWO THOUSANDS"),
    ("At 7:05 pm, at 10:00, at 12:00 p.m. and 5 am.",
     "AT SEVEN OH FIVE P M AT TEN O'CLOCK AT TWELVE P M AND FIVE A M"),
    ("1/2 and 3/4 and 2/3", "ONE HALF AND THREE QUARTERS AND TWO THIRDS"),
    ("Dr. Jones at No. 5 St. James's Street, #1 fan. Mrs Brown.",
     "DOCTOR JONES AT NUMBER FIVE SAINT JAMES'S STREET NUMBER ONE FAN MISSUS BROWN"),
    ("Gen. Lee and the next gen.", "GENERAL LEE AND THE NEXT GEN"),
    # Whisper's annotations and fillers go; contractions and spelling stay as written.
    ("[MUSIC] Um, I can't, uh, (laughs) do it ♪", "I CAN'T DO IT"),
    ("The colour of honour.", "THE COLOUR OF HONOUR"),
    ("", ""),
])
def test_normalize_whisper(whisper, expected):
  assert normalize_whisper(whisper) == expected


def test_output_is_in_the_normalized_convention():
  for s in ("Go forward 10 meters.", "Mr. Smith paid $5.50 at 10:30 a.m. in the 1990s."):
    out = normalize_whisper(s)
    assert out == text.normalize(out)  # idempotent under the project's normalizer
    assert text.CharTokenizer().encode(out)  # every character in the default vocabulary
