"""Sentences for the synthetic corpus: the vendored lists, cleaned, with evaluation text left out.

`load_sentences(cfg)` reads the lists of `cfg["sources"]` from `data/text/` (LJ Speech, CMU
ARCTIC, Harvard, VCTK; licences in its SOURCES.md) in file order and returns the usable
`Sentence`s plus every rejected one with its reason (`cfg` is a resolved corpus spec,
`corpus_spec.resolve_config`; this module reads its `text_dir`, `sources`, `min_words` and
`max_words`).

Each sentence is normalized with `distill_jax.text.normalize` (and must be a fixed point of it)
and must encode with the default `CharTokenizer`; the manifest stores the NORMALIZED text.
Sentences are left out, counted by reason and listed, when they: fail normalization/
tokenization; are a transcript of the real-speech evaluation clips (`data/text/
eval_exclude.tsv`: LJ001-0001..0032 and others, by id or by normalized text); hold an
abbreviation ("Mr.", "etc.": the TTS would expand it, the transcript would not), an all-caps
word of 2+ letters (spelled or read? ambiguous), or a currency sign; are shorter than
`min_words` or longer than `max_words`; or repeat an earlier sentence (after normalization).

The engines read a "speakable" form (`speakable_text`): the original words and sentence
punctuation (for prosody), with digits, symbols and accented letters replaced by the normalized
words, and it is checked that normalizing it gives exactly the manifest text.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from typing import Any, Mapping

from distill_jax import text as text_lib

SOURCES = ("ljspeech", "arctic", "harvard", "vctk")
DEFAULT_TEXT_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "data", "text")
EVAL_EXCLUDE_FILE = "eval_exclude.tsv"

_ABBREVIATION = re.compile(
    r"\b(?:(?:Mr|Mrs|Dr|Messrs|Mme|Mlle)\b\.?|(?:St|Co|Jr|Sr|Mt|Capt|Col|Gen|Lt|Prof|Rev|Hon|"
    r"Gov|Sgt|Esq|etc|viz|vs|ft|lb|oz|No)\.)", re.IGNORECASE)
_ALL_CAPS = re.compile(r"\b[A-Z]{2,}\b")
_CURRENCY = re.compile(r"[$\u00a3\u20ac#]")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u02bc": "'"})
_PLAIN_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")
_SENTENCE_PUNCT = ",.;:?!"


@dataclasses.dataclass(frozen=True)
class Sentence:
  """A usable sentence of one list."""
  source: str  # "ljspeech" | "arctic" | "harvard" | "vctk"
  source_id: str
  original: str  # as published
  text: str  # normalized (the manifest transcript)
  tts_text: str  # what the engines read


def _read_source(text_dir: str, source: str) -> list[tuple[str, str]]:
  """(source id, sentence) rows of one vendored list."""
  files = {"ljspeech": "ljspeech.tsv", "arctic": "arctic.tsv", "harvard": "harvard.txt",
           "vctk": "vctk_unique.tsv"}
  path = os.path.join(text_dir, files[source])
  if not os.path.exists(path):
    raise FileNotFoundError(f"sentence list for source {source!r} not found: {path}")
  rows = []
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      cols = line.rstrip("\n").split("\t")
      if not line.strip():
        continue
      if source == "harvard" and len(cols) == 3:
        rows.append((f"harvard_{int(cols[0]):02d}_{int(cols[1]):02d}", cols[2]))
      elif source != "harvard" and len(cols) >= 2:
        rows.append((cols[0], cols[1]))
      else:
        raise ValueError(f"{path}:{lineno}: unexpected column count {len(cols)}")
  return rows


def _read_eval_exclusions(text_dir: str) -> tuple[set[str], set[str]]:
  """(ids, normalized texts) of the real-speech evaluation clips."""
  path = os.path.join(text_dir, EVAL_EXCLUDE_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"evaluation exclusion list not found: {path}")
  ids, texts = set(), set()
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      cols = line.rstrip("\n").split("\t")
      if len(cols) != 3:
        raise ValueError(f"{path}:{lineno}: expected 3 columns (corpus, id, transcript)")
      ids.add(cols[1])
      texts.add(text_lib.normalize(cols[2]))
  return ids, texts


def speakable_text(original: str) -> str:
  """What the engines read: original words and sentence punctuation, numbers etc. spelled out.

  Plain words keep their case (helps the engines with names); any other token is replaced by
  its normalized words in lower case; of the punctuation only `,.;:?!` after a word is kept.
  """
  out = []
  for token in original.translate(_APOSTROPHES).split():
    core = token.strip("\"()[]{}<>*_,.;:?!-\u2013\u2014")
    trail = token[len(token.rstrip("\"()[]{}<>*_,.;:?!'")):]
    if not core:
      continue
    words = core if _PLAIN_WORD.fullmatch(core) else text_lib.normalize(core).lower()
    if not words:
      continue
    punct = next((c for c in trail if c in _SENTENCE_PUNCT), "")
    out.append(words + punct)
  return " ".join(out)


def _check_sentence(original: str,
                    tokenizer: text_lib.CharTokenizer) -> tuple[str, str, str, str]:
  """Returns (normalized, speakable, "", "") or ("", "", reason, detail) for a rejected one."""
  for reason, pattern in (("abbreviation", _ABBREVIATION), ("all-caps word", _ALL_CAPS),
                          ("currency sign", _CURRENCY)):
    m = pattern.search(original)
    if m:
      return "", "", reason, repr(m.group(0))
  try:
    normalized = text_lib.normalize(original)
  except (text_lib.TextError, ValueError) as e:
    return "", "", "normalization error", str(e)
  if not normalized:
    return "", "", "empty after normalization", ""
  if text_lib.normalize(normalized) != normalized:
    return "", "", "normalize not idempotent", normalized
  try:
    tokenizer.encode(normalized)
  except text_lib.TextError as e:
    return "", "", "not in vocabulary", str(e)
  speakable = speakable_text(original)
  if text_lib.normalize(speakable) != normalized:
    return "", "", "speakable form mismatch", speakable
  return normalized, speakable, "", ""


def load_sentences(cfg: Mapping[str, Any]) -> tuple[list[Sentence], list[dict[str, str]]]:
  """All usable sentences of `cfg['sources']` (file order) and the rejected ones with reasons."""
  text_dir = cfg["text_dir"] or DEFAULT_TEXT_DIR
  eval_ids, eval_texts = _read_eval_exclusions(text_dir)
  kept, rejected, seen = [], [], set()
  for source in cfg["sources"]:
    for source_id, original, normalized, speakable, error, why in _checked_source(
        text_dir, source):
      reason, detail = "", ""
      n_words = len(normalized.split())
      if source_id in eval_ids:
        reason = "real-speech eval sentence (id)"
      elif error:
        reason, detail = error, why
      elif normalized in eval_texts:
        reason = "real-speech eval sentence (text)"
      elif n_words < cfg["min_words"]:
        reason, detail = "fewer than min_words", f"{n_words} words"
      elif n_words > cfg["max_words"]:
        reason, detail = "more than max_words", f"{n_words} words"
      elif normalized in seen:
        reason = "duplicate"
      if reason:
        rejected.append({"source": source, "source_id": source_id, "reason": reason,
                         "detail": detail, "text": original})
      else:
        seen.add(normalized)
        kept.append(Sentence(source, source_id, original, normalized, speakable))
  return kept, rejected


@functools.lru_cache(maxsize=8)
def _checked_source(text_dir: str, source: str) -> tuple[tuple[str, ...], ...]:
  """(id, original, normalized, speakable, reject reason, detail) per row; cached per process
  (normalizing ~30k sentences takes a few seconds)."""
  tokenizer = text_lib.CharTokenizer()
  return tuple((source_id, original, *_check_sentence(original, tokenizer))
               for source_id, original in _read_source(text_dir, source))
