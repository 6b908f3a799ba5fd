"""Text normalization and the character tokenizer shared by teacher and student.

Normalization follows the wav2vec2 LibriSpeech convention: upper case, apostrophes kept, other
punctuation dropped, accented letters folded to ASCII, digits spelled out. Text that still holds
a character outside the vocabulary after that raises `TextError` naming the character, so the
caller can count and report the skipped utterance.

The tokenizer reads and writes a Hugging Face `vocab.json` ({token: id}). The default vocabulary
has the ids of facebook/wav2vec2-large-robust-ft-libri-960h: `<pad>`=0 is the CTC blank and `|`
is the word delimiter.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from typing import Iterable, Sequence

import num2words
import unidecode

PAD, BOS, EOS, UNK, WORD_DELIM = "<pad>", "<s>", "</s>", "<unk>", "|"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
DEFAULT_VOCAB = {
    tok: i for i, tok in enumerate(
        [PAD, BOS, EOS, UNK, WORD_DELIM] + list("ETAONIHSRDLUMWCFGYPBVK'XJQZ"))
}


class TextError(ValueError):
  """A transcript that cannot be normalized or tokenized; the message names the offending part."""


_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u02bc": "'"})
_SYMBOL_WORDS = {"&": " and ", "%": " percent ", "+": " plus ", "@": " at ", "=": " equals "}
_ORDINAL = re.compile(r"^(\d+)(st|nd|rd|th)$", re.IGNORECASE)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*(?:st|nd|rd|th)?", re.IGNORECASE)


def _spell_number(token: str) -> str:
  m = _ORDINAL.match(token)
  if m:
    return num2words.num2words(int(m.group(1)), to="ordinal")
  if re.fullmatch(r"\d{1,3}(,\d{3})+", token):  # 1,000,000
    return num2words.num2words(int(token.replace(",", "")))
  if re.fullmatch(r"\d+\.\d+", token):
    whole, frac = token.split(".")
    return num2words.num2words(int(whole)) + " point " + " ".join(
        num2words.num2words(int(d)) for d in frac)
  if re.fullmatch(r"\d+", token):
    n = int(token)
    if len(token) == 4 and 1100 <= n <= 2099 and n % 100 != 0 and not 2000 <= n <= 2009:
      return num2words.num2words(n, to="year")
    return num2words.num2words(n)
  raise TextError(f"cannot spell out number {token!r}")


def _fold_latin(c: str) -> str:
  """Folds a Latin letter with diacritics to ASCII (e -> e, ss for sharp s); other scripts are
  kept, so they surface as out-of-vocabulary characters instead of being transliterated."""
  if c.isascii() or not c.isalpha():
    return c
  return unidecode.unidecode(c) if unicodedata.name(c, "").startswith("LATIN") else c


def normalize(text: str, *, spell_numbers: bool = True, fold_ascii: bool = True) -> str:
  """Normalizes a transcript to the LibriSpeech convention ("IT'S TWENTY ONE O'CLOCK").

  Args:
    text: raw transcript.
    spell_numbers: spell digits as English words; when False a digit raises `TextError`.
    fold_ascii: fold accented letters to ASCII (English). Non-English vocabularies pass False
      and keep their letters (upper-cased).

  Returns:
    Upper-case words separated by single spaces; may be empty (the caller decides).
  """
  t = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES)
  for sym, word in _SYMBOL_WORDS.items():
    t = t.replace(sym, word)
  if spell_numbers:
    t = _NUMBER.sub(lambda m: " " + _spell_number(m.group(0)) + " ", t)
  elif re.search(r"\d", t):
    raise TextError(f"digits in transcript and spell_numbers=False: {text!r}")
  if fold_ascii:
    t = "".join(_fold_latin(c) for c in t)
  t = t.upper()
  # Hyphens, slashes and the like separate words; other punctuation disappears.
  t = re.sub(r"[-\u2013\u2014/_]", " ", t)
  t = "".join(c for c in t if c.isalpha() or c in " '" or c.isspace())
  words = []
  for w in t.split():
    w = w.lstrip("'")
    if w.endswith("'") and not w.endswith("S'"):
      w = w.rstrip("'")
    if w:
      words.append(w)
  return " ".join(words)


class CharTokenizer:
  """Character tokenizer over a Hugging Face wav2vec2 `vocab.json`.

  Spaces map to the word delimiter `|`. `encode` raises `TextError` for characters outside the
  vocabulary (never maps them silently to `<unk>`).
  """

  def __init__(self, vocab: dict[str, int] | None = None):
    vocab = dict(DEFAULT_VOCAB if vocab is None else vocab)
    ids = sorted(vocab.values())
    if ids != list(range(len(ids))):
      raise ValueError(f"vocabulary ids must be 0..{len(ids) - 1} without gaps")
    for tok in (PAD, WORD_DELIM):
      if tok not in vocab:
        raise ValueError(f"vocabulary lacks required token {tok!r}")
    self.vocab = vocab
    self.id_to_token = {i: t for t, i in vocab.items()}
    self.blank_id = vocab[PAD]
    self.pad_id = vocab[PAD]
    self.word_delim_id = vocab[WORD_DELIM]
    self.bos_id = vocab.get(BOS)
    self.eos_id = vocab.get(EOS)
    self._special_ids = {vocab[t] for t in SPECIAL_TOKENS if t in vocab}

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)

  @classmethod
  def from_file(cls, path: str) -> "CharTokenizer":
    """Reads `vocab.json` (or the folder holding it)."""
    if os.path.isdir(path):
      path = os.path.join(path, "vocab.json")
    with open(path, encoding="utf-8") as f:
      vocab = json.load(f)
    if not isinstance(vocab, dict):
      raise ValueError(f"{path}: expected a JSON object {{token: id}}")
    return cls({str(k): int(v) for k, v in vocab.items()})

  def save(self, folder: str) -> str:
    """Writes `vocab.json` into `folder`; returns its path."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "vocab.json")
    with open(path, "w", encoding="utf-8") as f:
      json.dump(self.vocab, f, ensure_ascii=False, indent=1)
    return path

  def encode(self, normalized: str) -> list[int]:
    """Encodes normalized text ("HELLO WORLD") to ids; raises `TextError` on unknown chars."""
    out = []
    for c in normalized:
      tok = WORD_DELIM if c == " " else c
      i = self.vocab.get(tok)
      if i is None or i in self._special_ids:
        raise TextError(f"character {c!r} is not in the vocabulary (text: {normalized!r})")
      out.append(i)
    return out

  def decode(self, ids: Iterable[int]) -> str:
    """Ids to text: special tokens dropped, `|` to spaces, spaces folded."""
    chars = []
    for i in ids:
      i = int(i)
      if i in self._special_ids:
        continue
      tok = self.id_to_token.get(i)
      if tok is None:
        raise TextError(f"id {i} is outside the vocabulary of size {self.vocab_size}")
      chars.append(" " if tok == WORD_DELIM else tok)
    return " ".join("".join(chars).split())

  def is_compatible_with(self, other: "CharTokenizer") -> bool:
    return self.vocab == other.vocab

  def describe_mismatch(self, other: "CharTokenizer") -> str:
    """Human-readable difference between two vocabularies (for teacher/student checks)."""
    diffs = []
    for tok in sorted(set(self.vocab) | set(other.vocab)):
      a, b = self.vocab.get(tok), other.vocab.get(tok)
      if a != b:
        diffs.append(f"{tok!r}: {a} vs {b}")
    return "; ".join(diffs[:10]) + (" ..." if len(diffs) > 10 else "")


def build_vocab(texts: Sequence[str]) -> dict[str, int]:
  """A character vocabulary from normalized transcripts: specials, `|`, then chars by frequency."""
  counts: dict[str, int] = {}
  for t in texts:
    for c in t:
      if c != " ":
        counts[c] = counts.get(c, 0) + 1
  chars = sorted(counts, key=lambda c: (-counts[c], c))
  return {tok: i for i, tok in enumerate([PAD, BOS, EOS, UNK, WORD_DELIM] + chars)}
