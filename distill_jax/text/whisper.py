"""Whisper's English transcripts in the project's transcript convention (LibriSpeech style).

Whisper writes text as people type it: "Mr. Smith paid $5.50 at 10:30 a.m. in the 1990s. [MUSIC]".
The project's labels are upper-case words with apostrophes and every number spelled out
(`distill_jax.text.normalize`). `normalize_whisper` bridges the two, so that Whisper's outputs
can be scored against references normalized with `text.normalize`, and used as labels:

1. Whisper's own conventions, from `whisper-normalizer` (OpenAI's English normalizer): bracketed
   and parenthesized annotations ("[MUSIC]", "(laughs)") and its filler words (hmm, mm, mhm,
   mmm, uh, um) are removed, and its title abbreviations spelled before a capitalized name
   ("Mr. Smith" -> MISTER SMITH, "Dr." -> DOCTOR, "St." -> SAINT). Its contraction expansion,
   British -> American spelling and words -> digits steps are not applied: they go against the
   convention (which keeps "IT'S", the reference's spelling and spelled numbers).
2. Number forms that `text.normalize` does not spell, with `num2words`: currency ("$5.50" ->
   FIVE DOLLARS FIFTY CENTS, "$3 million" -> THREE MILLION DOLLARS, also pounds and euros),
   decades ("1990s" -> NINETEEN NINETIES, "'80s" -> EIGHTIES), clock times ("10:30" -> TEN
   THIRTY, "7:05" -> SEVEN OH FIVE, "10:00" -> TEN O'CLOCK unless a.m./p.m. follows), a.m./p.m.
   after a number (-> A M / P M), simple fractions ("1/2" -> ONE HALF, "3/4" -> THREE QUARTERS),
   "No. 5" / "#5" (-> NUMBER FIVE).
3. `text.normalize`: upper case, remaining digits spelled ("10" -> TEN, "1990" -> NINETEEN NINETY,
   "21st" -> TWENTY FIRST, "3.5" -> THREE POINT FIVE, "5%" -> FIVE PERCENT), punctuation dropped.
"""

from __future__ import annotations

import re

import num2words
from whisper_normalizer import english as whisper_english

from distill_jax import text

_WHISPER = whisper_english.EnglishTextNormalizer()


def _title_patterns() -> list[tuple[re.Pattern, str]]:
  """Whisper's title abbreviations: its replacers r"\bmr\b" -> "mister " ("contractions in
  titles/prefixes", those whose replacement ends in a space; its other replacers expand
  contractions, which the project's convention keeps). Here a title is spelled only before a
  capitalized word ("Gen. Lee", not "the next gen."), and needs its period except Mr, Mrs, Dr."""
  out = []
  for pattern, word in _WHISPER.replacers.items():
    m = re.fullmatch(r"\\b([a-z]+)\\b", pattern)
    if m and word.endswith(" "):
      abbr = m.group(1)
      period = r"\.?" if abbr in ("mr", "mrs", "dr") else r"\."
      out.append((re.compile(rf"\b(?i:{abbr}){period}\s+(?=[A-Z])"), word.strip() + " "))
  return out


_TITLES = _title_patterns()
_FILLERS = _WHISPER.ignore_patterns

_CURRENCY = {"$": ("dollar", "dollars", "cent", "cents"),
             "£": ("pound", "pounds", "penny", "pence"),
             "€": ("euro", "euros", "cent", "cents")}
_SCALE = r"(?:hundred|thousand|million|billion|trillion)"
_MONEY = re.compile(
    r"([$£€])\s?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{1,2}))?(?:\s+(" + _SCALE + r"))?\b",
    re.IGNORECASE)
_DECADE = re.compile(r"(?<![\w'])('?)(\d{2}|\d{4})'?s\b")
_TIME = re.compile(r"\b(\d{1,2}):([0-5]\d)\b(\s*[ap]\.?\s?m\b\.?)?", re.IGNORECASE)
_AM_PM = re.compile(r"(\d)\s*([ap])\.?\s?m\b\.?", re.IGNORECASE)
_FRACTION = re.compile(r"(?<![\d/])(\d+)/(\d+)(?![\d/])")
_NUMBER_SIGN = re.compile(r"(?:\bno\.|#)\s?(?=\d)", re.IGNORECASE)


def _words(n: int) -> str:
  return num2words.num2words(n)


def _money(m: re.Match) -> str:
  one, many, sub_one, sub_many = _CURRENCY[m.group(1)]
  whole = int(m.group(2).replace(",", ""))
  scale = m.group(4)
  if scale:  # "$3 million", "$2.5 billion"
    amount = m.group(2) + ("." + m.group(3) if m.group(3) else "")
    return f" {amount} {scale.lower()} {many} "
  out = f" {_words(whole)} {one if whole == 1 else many}"
  if m.group(3):
    cents = int(m.group(3).ljust(2, "0"))
    if cents:
      out += f" {_words(cents)} {sub_one if cents == 1 else sub_many}"
  return out + " "


def _plural(words: str) -> str:
  """"nineteen ninety" -> "nineteen nineties"; "two thousand" -> "two thousands"."""
  head, _, last = words.rpartition(" ")
  last = last[:-1] + "ies" if last.endswith("y") else last + "s"
  return f"{head} {last}".strip()


def _decade(m: re.Match) -> str:
  apostrophe, digits = m.group(1), m.group(2)
  n = int(digits)
  if len(digits) == 2:
    if apostrophe or n % 10 == 0:  # '80s, 90s
      return " " + _plural(_words(n)) + " "
    return m.group(0)  # "20s" as in "in her 20s" is also a decade; other 2-digit + s is left
  if n % 10 != 0:
    return m.group(0)
  spoken = num2words.num2words(n, to="year") if 1100 <= n <= 2099 and n != 2000 else _words(n)
  return " " + _plural(spoken) + " "


def _time(m: re.Match) -> str:
  hour, minute, suffix = int(m.group(1)), int(m.group(2)), m.group(3)
  if hour > 24:
    return m.group(0)
  out = _words(hour)
  if minute == 0:
    out += "" if suffix else " o'clock"
  elif minute < 10:
    out += f" oh {_words(minute)}"
  else:
    out += f" {_words(minute)}"
  if suffix:
    out += " " + re.sub(r"[^ap]", "", suffix.lower()) + " m"
  return f" {out} "


def _fraction(m: re.Match) -> str:
  num, den = int(m.group(1)), int(m.group(2))
  if den < 2 or den > 100 or num > 100:
    return f" {m.group(1)} over {m.group(2)} " if den else m.group(0)
  name = {2: "half", 4: "quarter"}.get(den) or num2words.num2words(den, to="ordinal")
  if num != 1:
    name = "halves" if den == 2 else name + "s"
  return f" {_words(num)} {name} "


def normalize_whisper(transcript: str) -> str:
  """Whisper's English text -> the project's convention ("TEN", "NINETEEN NINETY", "IT'S").

  Raises:
    text.TextError: text that `text.normalize` cannot spell (it names the part).
  """
  s = transcript
  for pattern, word in _TITLES:
    s = pattern.sub(word, s)
  s = s.lower()
  s = re.sub(r"[<\[][^>\]]*[>\]]", " ", s)  # [MUSIC], <|...|>
  s = re.sub(r"\(([^)]+?)\)", " ", s)  # (laughs)
  s = re.sub(r"[♪♫]", " ", s)
  s = re.sub(_FILLERS, " ", s)
  s = _NUMBER_SIGN.sub(" number ", s)
  s = _MONEY.sub(_money, s)
  s = _TIME.sub(_time, s)
  s = _AM_PM.sub(lambda m: f"{m.group(1)} {m.group(2).lower()} m ", s)
  s = _DECADE.sub(_decade, s)
  s = _FRACTION.sub(_fraction, s)
  return text.normalize(s)
