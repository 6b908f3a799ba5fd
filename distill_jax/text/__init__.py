"""Text normalization and the character tokenizer shared by teacher and student.

Normalization follows the wav2vec2 LibriSpeech convention: upper case, apostrophes kept, other
punctuation dropped, accented letters folded to ASCII, digits spelled out. Text that still holds
a character outside the vocabulary after that raises `TextError` naming the character, so the
caller can count and report the skipped utterance.

Other languages (FLEURS) pass `language` (a FLEURS code such as "de_de" or a bare "de"): letters
keep their diacritics (upper-cased where the script has case), combining marks inside words are
kept (Devanagari vowel signs and virama, Arabic harakat), digits are spelled with num2words in
that language when it has one (else a digit is a `TextError`, a counted skip), and the character
vocabulary comes from the training transcripts (`vocab_from_transcripts`, saved as vocab.json).
`check_coverage` raises a `TextError` that names the missing characters when a vocabulary (e.g.
a configured English teacher's) cannot cover a language's transcripts.

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


def language_code(language: str) -> str:
  """"de_de" / "de-DE" / "de" -> "de" (the ISO 639 part, lower case)."""
  return re.split(r"[_-]", language.strip().lower(), maxsplit=1)[0] or "en"


def _spell_number_in(token: str, lang: str) -> str:
  """Spells a number in a language other than English with num2words (integers, decimals)."""
  if lang not in num2words.CONVERTER_CLASSES:
    raise TextError(f"cannot spell out number {token!r}: num2words has no language {lang!r}")
  plain = token.replace(",", "").replace(".", "") if re.fullmatch(
      r"\d{1,3}([.,]\d{3})+", token) else token
  try:
    if re.fullmatch(r"\d+", plain):
      return num2words.num2words(int(plain), lang=lang)
    if re.fullmatch(r"\d+[.,]\d+", plain):
      return num2words.num2words(float(plain.replace(",", ".")), lang=lang)
  except (NotImplementedError, OverflowError, ValueError) as e:
    raise TextError(f"cannot spell out number {token!r} in {lang!r}: {e}") from None
  raise TextError(f"cannot spell out number {token!r} in {lang!r}")


def normalize(text: str, *, spell_numbers: bool = True, fold_ascii: bool | None = None,
              language: str = "en") -> str:
  """Normalizes a transcript to the LibriSpeech convention ("IT'S TWENTY ONE O'CLOCK").

  Args:
    text: raw transcript.
    spell_numbers: spell digits as words in `language`; when False a digit raises `TextError`.
    fold_ascii: fold accented Latin letters to ASCII; default: only for English. Without it
      letters keep their diacritics (upper-cased) and combining marks inside words are kept.
    language: "en" (default), or e.g. "de_de", "hi_in" (FLEURS codes) / "de", "hi".

  Returns:
    Upper-case words separated by single spaces; may be empty (the caller decides).
  """
  lang = language_code(language)
  if fold_ascii is None:
    fold_ascii = lang == "en"
  t = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES)
  if lang == "en":
    for sym, word in _SYMBOL_WORDS.items():
      t = t.replace(sym, word)
  if spell_numbers:
    spell = _spell_number if lang == "en" else lambda tok: _spell_number_in(tok, lang)
    t = _NUMBER.sub(lambda m: " " + spell(m.group(0)) + " ", t)
  elif re.search(r"\d", t):
    raise TextError(f"digits in transcript and spell_numbers=False: {text!r}")
  if fold_ascii:
    t = "".join(_fold_latin(c) for c in t)
  t = t.upper()
  # Hyphens, slashes and the like separate words; other punctuation disappears.
  t = re.sub(r"[-\u2013\u2014/_]", " ", t)
  keep_marks = not fold_ascii
  t = "".join(c for c in t if c.isalpha() or c in " '" or c.isspace()
              or (keep_marks and unicodedata.category(c).startswith("M")))
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


def vocab_from_transcripts(texts: Iterable[str], *, language: str = "en",
                           **options) -> tuple[CharTokenizer, dict[str, int]]:
  """A tokenizer over the characters of normalized training transcripts.

  Transcripts that cannot be normalized are counted, not fatal (the pipeline skips them too).

  Returns:
    (tokenizer, {"transcripts": n, "skipped": k, "characters": v}) for the log.
  """
  norm, skipped, n = [], 0, 0
  for t in texts:
    n += 1
    try:
      norm.append(normalize(t, language=language, **options))
    except TextError:
      skipped += 1
  norm = [t for t in norm if t]
  if not norm:
    raise TextError(f"no transcript out of {n} normalizes to any character "
                    f"(language={language!r}); cannot build a vocabulary")
  tok = CharTokenizer(build_vocab(norm))
  return tok, dict(transcripts=n, skipped=skipped, characters=tok.vocab_size - 5)


def check_coverage(tokenizer: CharTokenizer, texts: Iterable[str], *, what: str,
                   language: str = "en", max_missing_fraction: float = 0.0, **options) -> None:
  """Raises `TextError` when `tokenizer` lacks characters of the normalized transcripts.

  Args:
    tokenizer: e.g. the vocabulary of the configured teacher.
    texts: raw transcripts of the language (normalized here with `language`).
    what: names the vocabulary in the message ("teacher vocabulary teachers/large/vocab.json").
    max_missing_fraction: tolerated fraction of character occurrences outside the vocabulary.
  """
  missing: dict[str, int] = {}
  total = 0
  for t in texts:
    try:
      norm = normalize(t, language=language, **options)
    except TextError:
      continue
    for c in norm.replace(" ", ""):
      total += 1
      if c not in tokenizer.vocab or tokenizer.vocab[c] in tokenizer._special_ids:
        missing[c] = missing.get(c, 0) + 1
  lost = sum(missing.values())
  if total and lost / total > max_missing_fraction:
    top = sorted(missing.items(), key=lambda kv: -kv[1])
    shown = ", ".join(f"{c!r} ({unicodedata.name(c, 'U+%04X' % ord(c))}) x{k}"
                      for c, k in top[:12])
    raise TextError(
        f"{what} cannot cover language {language!r}: {lost} of {total} characters "
        f"({100 * lost / total:.1f}%) of its normalized transcripts are outside the vocabulary "
        f"of {tokenizer.vocab_size}: {shown}{' ...' if len(top) > 12 else ''}. Use a teacher "
        f"fine-tuned on this language, or a vocabulary built from its transcripts "
        f"(launch.make_manifest --config writes one to config.tokenizer.vocab)")
