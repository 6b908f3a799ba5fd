"""Synthetic read-speech corpus: public sentence lists spoken by three TTS engines.

`build_corpus(corpus_cfg, out_dir)` writes

  OUT/audio/<split>/<id>.flac        16 kHz mono 16-bit FLAC
  OUT/{train,dev,test}.jsonl         manifests (`manifest.write_manifest`: id, path, text,
                                     speaker, engine, duration)
  OUT/summary.json                   hours / utterances / voices / engines per split, rejected
                                     sentences by reason, failed utterances (deterministic)
  OUT/plan.jsonl                     every planned utterance with its TTS text, rate, pitch, seed
  OUT/rejected_sentences.jsonl       every sentence left out, with the reason
  OUT/failures.jsonl                 utterances whose synthesis failed (reason named)
  OUT/corpus_config.json             the resolved config, its fingerprint, the engine versions
  OUT/build_log.jsonl                one line per run: what was synthesized, wall time, speed

Text. The vendored lists in `data/text/` (LJ Speech, CMU ARCTIC, Harvard, VCTK; licences in
its SOURCES.md). Each sentence is normalized with `distill_jax.text.normalize` (and must be a
fixed point of it) and must encode with the default `CharTokenizer`; the manifest stores the
NORMALIZED text. Sentences are left out, counted by reason and listed, when they: fail
normalization/tokenization; are a transcript of the real-speech evaluation clips
(`data/text/eval_exclude.tsv`: LJ001-0001..0032 and others, by id or by normalized text); hold
an abbreviation ("Mr.", "etc.": the TTS would expand it, the transcript would not), an all-caps
word of 2+ letters (spelled or read? ambiguous), or a currency sign; are shorter than
`min_words` or longer than `max_words`; or repeat an earlier sentence (after normalization).
The engines read a "speakable" form: the original words and sentence punctuation (for
prosody), with digits, symbols and accented letters replaced by the normalized words, and it is
checked that normalizing it gives exactly the manifest text.

Splits. Sentences are ordered by a keyed hash of (seed, normalized text); the first
`test_utterances` go to test, the next `dev_utterances` to dev, the rest to train, so sentence
sets are disjoint across splits and dev/test do not move when `train_hours` changes. Dev and
test speak each sentence once; train walks its sentences in hash order and, when it runs out
before `train_hours`, starts another pass with a new order (a sentence then comes back in other
voices). `train_hours` is met on estimated durations (characters / engine speed / rate), so the
real figure is approximate; `max_train_utterances` > 0 caps the count as well.

Voices (a speaker = engine + voice + variant; see `tts.py`). Test uses voices never heard in
train or dev, held out per engine. Dev uses its own held-out voices where an engine has enough
of them to spare (espeak-ng: 36 variants), else training voices (flite: four distinct people,
kal/kal16 being one, so holding out two would leave training with two; hibari: one neural voice
offline). Dev therefore measures unseen sentences always, unseen voices for espeak-ng only;
test measures both for all engines.

  engine     train (and dev unless listed)           dev                  test
  flite      kal, kal16, rms, slt                    = train              awb (Scottish male)
  espeak-ng  7 accents x 24 variants                 7 accents x          8 accents (adds
                                                     6 variants           en-gb-x-gbcwmd) x
                                                                          6 variants
  hibari     heart-{us,gb}, heart-{us,gb}-high       = train              heart-{us,gb}-low

hibari's held-out test speakers differ from the training ones only by pitch register (F0 x0.78)
and G2P accent, a weaker hold-out than a new person: the wheel ships one voice ("heart"); the
others download on first use, which this workplace cannot do.

Engines take turns (utterance k uses engines[k % len(engines)]); the voice, rate, pitch, peak
level and hibari noise seed of utterance k are keyed hashes of (seed, split, k), so a build is
deterministic for a seed and independent of the worker count or order. Rate and pitch are drawn
per utterance inside a speaker's own sub-range (centre keyed by speaker, half width a quarter of
`rate_range`/`pitch_range`). Audio: engine output -> 16 kHz (soxr HQ) -> leading/trailing
silence trimmed (frames 40 dB below the loudest, 0.15 s kept) -> peak scaled to a level in
`peak_dbfs_range` -> a seeded Gaussian noise floor at `noise_floor_dbfs` (espeak-ng pauses are
exact digital zeros, which no microphone produces) -> 16-bit FLAC. An utterance longer than
`max_seconds` is re-synthesized once, faster; if still too long it fails.

Build. Every run re-derives the plan (a few seconds), checks `corpus_config.json` (a different
config in the same folder is an error naming the differing keys; `num_workers` is not part of
it), then synthesizes only the planned files that do not exist yet: each is written to a temp
file and renamed, so a killed run restarted finishes the rest, and a second run of a finished
corpus synthesizes nothing. Failures (engine error, empty or over-long audio) are appended to
`failures.jsonl`, listed in the summary and skipped by later runs unless `retry_failed=True`.
Work runs in a `spawn` multiprocessing pool (`num_workers`, 0 = all cores) with a tqdm bar;
with one worker it runs in-process.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import glob
import hashlib
import json
import logging
import multiprocessing
import os
import re
import sys
import time
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import soundfile as sf
import soxr

from distill_jax import text as text_lib
from distill_jax.data import manifest
from distill_jax.data import tts

FORMAT_VERSION = 1
SAMPLE_RATE = 16000
SPLITS = ("train", "dev", "test")
SOURCES = ("ljspeech", "arctic", "harvard", "vctk")
DEFAULT_TEXT_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "data", "text")
EVAL_EXCLUDE_FILE = "eval_exclude.tsv"

# The corpus spec: `configs/corpus.py` turns this into the ConfigDict experiments embed as
# `config.data.corpus`. Keys absent from a given config take these values.
DEFAULT_CORPUS: dict[str, Any] = {
    "seed": 0,
    "train_hours": 1.0,
    "max_train_utterances": 0,  # 0: no cap beyond train_hours
    "dev_utterances": 200,
    "test_utterances": 200,
    "engines": tts.ENGINES,
    "sources": SOURCES,
    "min_words": 3,
    "max_words": 30,
    "max_seconds": 15.0,
    "rate_range": (0.85, 1.2),
    "pitch_range": (0.88, 1.12),
    "peak_dbfs_range": (-12.0, -1.0),
    "noise_floor_dbfs": -75.0,  # seeded Gaussian noise (rms) added to every file; <= -120: none
    "trim_silence": True,
    "text_dir": "",  # "": the vendored data/text/
    "num_workers": 0,  # 0: os.cpu_count(); does not change the corpus
}
# Keys that do not change the corpus (left out of the fingerprint).
NON_CONTENT_KEYS = ("num_workers",)

# Voice hold-out (module docstring). espeak-ng variants that sound alike (linda/belinda, the
# klatt-6 family adam/benjamin/david, klatt5/edward) are kept in one split.
FLITE_SPLITS = {"train": ("kal", "kal16", "rms", "slt"), "dev": ("kal", "kal16", "rms", "slt"),
                "test": ("awb",)}
ESPEAK_TEST_ONLY_ACCENTS = ("en-gb-x-gbcwmd",)
ESPEAK_VARIANT_SPLITS = {
    "train": ("m1", "m2", "m3", "m5", "m6", "m8", "f1", "f2", "f4", "klatt", "klatt3", "klatt4",
              "Andy", "Gene", "Mike", "adam", "benjamin", "david", "belinda", "linda", "paul",
              "robert", "steph", "travis"),
    "dev": ("m4", "f3", "klatt2", "Annie", "Jacky", "grandpa"),
    "test": ("m7", "f5", "klatt5", "edward", "Alicia", "quincy"),
}
HIBARI_SPLITS = {"train": ("heart-us", "heart-gb", "heart-us-high", "heart-gb-high"),
                 "dev": ("heart-us", "heart-gb", "heart-us-high", "heart-gb-high"),
                 "test": ("heart-us-low", "heart-gb-low")}

# Seconds of speech per character of normalized text at rate 1.0 (measured on this corpus,
# after trimming), used only to meet `train_hours`.
SECONDS_PER_CHAR = {tts.FLITE: 0.0557, tts.ESPEAK: 0.0506, tts.HIBARI: 0.054}

_ABBREVIATION = re.compile(
    r"\b(?:(?:Mr|Mrs|Dr|Messrs|Mme|Mlle)\b\.?|(?:St|Co|Jr|Sr|Mt|Capt|Col|Gen|Lt|Prof|Rev|Hon|"
    r"Gov|Sgt|Esq|etc|viz|vs|ft|lb|oz|No)\.)", re.IGNORECASE)
_ALL_CAPS = re.compile(r"\b[A-Z]{2,}\b")
_CURRENCY = re.compile(r"[$\u00a3\u20ac#]")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u02bc": "'"})
_PLAIN_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")
_SENTENCE_PUNCT = ",.;:?!"
_TRIM_DB = 40.0
_TRIM_KEEP_S = 0.15
_MIN_SECONDS = 0.3
_MAX_RATE = 2.0


class CorpusConfigError(ValueError):
  """The corpus config is invalid, or differs from the one a corpus folder was built with."""


# ----------------------------------------------------------------------------------------------
# Config.

def resolve_config(corpus_cfg: Any) -> dict[str, Any]:
  """ConfigDict / mapping -> plain dict with every key of `DEFAULT_CORPUS`, validated."""
  given = corpus_cfg.to_dict() if hasattr(corpus_cfg, "to_dict") else dict(corpus_cfg)
  unknown = sorted(set(given) - set(DEFAULT_CORPUS))
  if unknown:
    raise CorpusConfigError(
        f"unknown corpus config key(s) {unknown}; known: {sorted(DEFAULT_CORPUS)}")
  cfg = {**DEFAULT_CORPUS, **given}
  for key in ("engines", "sources", "rate_range", "pitch_range", "peak_dbfs_range"):
    cfg[key] = tuple(cfg[key])
  bad = [e for e in cfg["engines"] if e not in tts.ENGINES]
  if bad or not cfg["engines"]:
    raise CorpusConfigError(f"corpus.engines={cfg['engines']!r}: choose from {tts.ENGINES}")
  bad = [s for s in cfg["sources"] if s not in SOURCES]
  if bad or not cfg["sources"]:
    raise CorpusConfigError(f"corpus.sources={cfg['sources']!r}: choose from {SOURCES}")
  for key in ("rate_range", "pitch_range", "peak_dbfs_range"):
    lo, hi = cfg[key]
    if not lo <= hi:
      raise CorpusConfigError(f"corpus.{key}={cfg[key]!r}: need low <= high")
  if cfg["rate_range"][0] <= 0 or cfg["pitch_range"][0] <= 0:
    raise CorpusConfigError("corpus.rate_range and corpus.pitch_range must be positive")
  for key in ("dev_utterances", "test_utterances", "max_train_utterances", "min_words"):
    if int(cfg[key]) < 0:
      raise CorpusConfigError(f"corpus.{key}={cfg[key]!r} must be >= 0")
  if cfg["max_words"] < max(1, cfg["min_words"]):
    raise CorpusConfigError(f"corpus.max_words={cfg['max_words']} < min_words={cfg['min_words']}")
  if cfg["train_hours"] < 0 or cfg["max_seconds"] <= _MIN_SECONDS:
    raise CorpusConfigError("corpus.train_hours must be >= 0 and corpus.max_seconds > 0.3")
  return cfg


def content_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
  """The keys that determine the corpus, JSON-canonical (tuples as lists)."""
  keep = {k: v for k, v in cfg.items() if k not in NON_CONTENT_KEYS}
  keep["format_version"] = FORMAT_VERSION
  return json.loads(json.dumps(keep, sort_keys=True))


def fingerprint(cfg: Mapping[str, Any]) -> str:
  blob = json.dumps(content_config(cfg), sort_keys=True).encode()
  return hashlib.sha256(blob).hexdigest()[:16]


def _config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
  keys = sorted(set(old) | set(new))
  return [f"{k} ({old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r})"
          for k in keys if old.get(k) != new.get(k)]


def _check_or_write_config(out_dir: str, cfg: Mapping[str, Any]) -> None:
  """Raises `CorpusConfigError` if `out_dir` holds a corpus built from another config."""
  path = os.path.join(out_dir, "corpus_config.json")
  content = content_config(cfg)
  versions = {e: tts.engine_version(e) for e in cfg["engines"]}
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      old = json.load(f)
    if old.get("fingerprint") != fingerprint(cfg):
      diff = _config_diff(old.get("config", {}), content)
      raise CorpusConfigError(
          f"{out_dir} holds a corpus built with another config; differing keys: "
          f"{'; '.join(diff) or '(format)'}. Use another --out or delete that folder.")
    old_versions = old.get("engine_versions", {})
    changed = {e: (old_versions.get(e), v) for e, v in versions.items()
               if old_versions.get(e) not in (None, v)}
    if changed:
      logging.warning("TTS engine versions differ from the ones %s was started with: %s; "
                      "files synthesized now may not match a fresh build", out_dir, changed)
    return
  _write_json(path, {"fingerprint": fingerprint(cfg), "config": content,
                     "engine_versions": versions})


# ----------------------------------------------------------------------------------------------
# Deterministic randomness: keyed hashes, stable across Python / NumPy versions and processes.

def _uniform(*key: Any) -> float:
  """A number in [0, 1) that depends only on `key`."""
  digest = hashlib.blake2b("\x1f".join(map(str, key)).encode(), digest_size=8).digest()
  return int.from_bytes(digest, "big") / 2.0**64


def _in_speaker_range(seed: int, speaker: str, what: str, lo: float, hi: float,
                      *utterance_key: Any) -> float:
  """A value in [lo, hi] around a per-speaker centre (speaker's own sub-range)."""
  width = hi - lo
  centre = lo + width * (0.25 + 0.5 * _uniform(seed, "centre", what, speaker))
  return centre + (width / 4) * (2 * _uniform(seed, what, *utterance_key) - 1)


# ----------------------------------------------------------------------------------------------
# Text.

@dataclasses.dataclass(frozen=True)
class Sentence:
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


def split_sentences(sentences: Sequence[Sentence],
                    cfg: Mapping[str, Any]) -> dict[str, list[Sentence]]:
  """Disjoint sentence sets: hash order; test first, then dev, train the rest."""
  order = sorted(sentences, key=lambda s: (_uniform(cfg["seed"], "sentence", s.text), s.text))
  n_test, n_dev = int(cfg["test_utterances"]), int(cfg["dev_utterances"])
  if n_test + n_dev >= len(order):
    raise CorpusConfigError(
        f"corpus.test_utterances={n_test} + dev_utterances={n_dev} leave no training sentence "
        f"out of {len(order)} usable ones (raise max_words, add sources)")
  return {"test": order[:n_test], "dev": order[n_test:n_test + n_dev],
          "train": order[n_test + n_dev:]}


def language_model_text(corpus_cfg: Any) -> list[str]:
  """Normalized text of every training-split sentence, for a word n-gram LM.

  The training split of the sentence pool (see `split_sentences`), not only the sentences that
  were synthesized: dev and test sentences and the real-speech evaluation transcripts are
  never in it, so an LM built from it has not seen any evaluation text.
  """
  cfg = resolve_config(corpus_cfg)
  sentences, _ = load_sentences(cfg)
  return [s.text for s in split_sentences(sentences, cfg)["train"]]


# ----------------------------------------------------------------------------------------------
# Voices and plan.

@functools.lru_cache(maxsize=None)
def split_voices(engine: str, split: str) -> tuple[tts.Voice, ...]:
  """The speakers an engine uses in a split (module docstring)."""
  if engine == tts.FLITE:
    return tuple(tts.flite_voice(n) for n in FLITE_SPLITS[split])
  if engine == tts.ESPEAK:
    accents = tts.ESPEAK_ACCENTS if split == "test" else tuple(
        a for a in tts.ESPEAK_ACCENTS if a not in ESPEAK_TEST_ONLY_ACCENTS)
    return tuple(tts.espeak_voice(a, v) for v in ESPEAK_VARIANT_SPLITS[split] for a in accents)
  if engine == tts.HIBARI:
    return tuple(tts.hibari_voice(n) for n in HIBARI_SPLITS[split])
  raise ValueError(f"unknown engine {engine!r}")


@dataclasses.dataclass(frozen=True)
class PlannedUtterance:
  id: str
  split: str
  source: str
  source_id: str
  text: str  # normalized transcript
  tts_text: str
  speaker: str
  engine: str
  rate: float
  pitch: float
  seed: int
  peak_dbfs: float
  est_seconds: float

  @property
  def relpath(self) -> str:
    return os.path.join("audio", self.split, f"{self.id}.flac")


def estimate_seconds(text: str, engine: str, rate: float) -> float:
  return len(text) * SECONDS_PER_CHAR[engine] / rate + 2 * _TRIM_KEEP_S


def _plan_one(cfg: Mapping[str, Any], split: str, k: int, sentence: Sentence) -> PlannedUtterance:
  seed = cfg["seed"]
  engines = cfg["engines"]
  engine = engines[k % len(engines)]
  voices = split_voices(engine, split)
  voice = voices[int(_uniform(seed, split, k, "voice") * len(voices))]
  rate = _in_speaker_range(seed, voice.speaker, "rate", *cfg["rate_range"], split, k)
  pitch = _in_speaker_range(seed, voice.speaker, "pitch", *cfg["pitch_range"], split, k)
  lo, hi = cfg["peak_dbfs_range"]
  return PlannedUtterance(
      id=f"{split}-{k:06d}", split=split, source=sentence.source, source_id=sentence.source_id,
      text=sentence.text, tts_text=sentence.tts_text, speaker=voice.speaker, engine=engine,
      rate=round(rate, 4), pitch=round(pitch, 4),
      seed=int(_uniform(seed, split, k, "noise") * 2**31),
      peak_dbfs=round(lo + (hi - lo) * _uniform(seed, split, k, "peak"), 2),
      est_seconds=round(estimate_seconds(sentence.text, engine, rate), 3))


def _plan_train(cfg: Mapping[str, Any], sentences: Sequence[Sentence]) -> list[PlannedUtterance]:
  target_s = float(cfg["train_hours"]) * 3600.0
  cap = int(cfg["max_train_utterances"])
  plan: list[PlannedUtterance] = []
  total = 0.0
  n_pass = 0
  while total < target_s and (cap <= 0 or len(plan) < cap):
    order = sentences if n_pass == 0 else sorted(
        sentences, key=lambda s: (_uniform(cfg["seed"], "pass", n_pass, s.text), s.text))
    for sentence in order:
      if total >= target_s or (cap > 0 and len(plan) >= cap):
        break
      u = _plan_one(cfg, "train", len(plan), sentence)
      plan.append(u)
      total += u.est_seconds
    n_pass += 1
  return plan


@dataclasses.dataclass
class Plan:
  utterances: dict[str, list[PlannedUtterance]]
  rejected: list[dict[str, str]]
  n_sentences: dict[str, int]  # distinct sentences per split


def plan_corpus(corpus_cfg: Any) -> Plan:
  """Everything but the audio: which sentence, voice, rate and pitch each utterance gets."""
  cfg = resolve_config(corpus_cfg)
  sentences, rejected = load_sentences(cfg)
  by_split = split_sentences(sentences, cfg)
  utts = {
      "test": [_plan_one(cfg, "test", k, s) for k, s in enumerate(by_split["test"])],
      "dev": [_plan_one(cfg, "dev", k, s) for k, s in enumerate(by_split["dev"])],
      "train": _plan_train(cfg, by_split["train"]),
  }
  return Plan(utts, rejected, {s: len(v) for s, v in by_split.items()})


# ----------------------------------------------------------------------------------------------
# Audio.

def _trim_silence(audio: np.ndarray, sr: int) -> np.ndarray:
  """Cuts leading/trailing frames 40 dB below the loudest 10 ms frame, keeping 0.15 s."""
  hop = sr // 100
  n = len(audio) // hop
  if n < 3:
    return audio
  rms = np.sqrt(np.mean(audio[:n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1))
  loud = np.nonzero(rms > rms.max() * 10 ** (-_TRIM_DB / 20))[0]
  if loud.size == 0:
    return audio
  keep = int(_TRIM_KEEP_S * sr)
  start = max(0, loud[0] * hop - keep)
  end = min(len(audio), (loud[-1] + 1) * hop + keep)
  return audio[start:end]


def _to_pcm16(audio: np.ndarray, sr: int, peak_dbfs: float, trim: bool, noise_floor_dbfs: float,
              seed: int) -> np.ndarray:
  """Engine output -> 16 kHz, trimmed, peak-scaled, noise floor added, int16."""
  audio = np.asarray(audio, np.float32)
  if sr != SAMPLE_RATE:
    audio = soxr.resample(audio, sr, SAMPLE_RATE, quality="HQ").astype(np.float32)
  if trim:
    audio = _trim_silence(audio, SAMPLE_RATE)
  peak = float(np.max(np.abs(audio))) if audio.size else 0.0
  if peak < 1e-4:
    raise tts.TTSError("silent audio")
  audio = audio * (10 ** (peak_dbfs / 20) / peak)
  if noise_floor_dbfs > -120:  # no digital silence (espeak-ng pauses are exact zeros)
    noise = np.random.default_rng(seed).standard_normal(audio.shape, dtype=np.float32)
    audio = audio + noise * np.float32(10 ** (noise_floor_dbfs / 20))
  return np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)


def _write_flac_atomic(path: str, pcm: np.ndarray) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.{os.getpid()}.tmp"
  sf.write(tmp, pcm, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
  os.replace(tmp, path)


def synthesize_utterance(u: PlannedUtterance, out_dir: str, *, max_seconds: float,
                         trim: bool = True, noise_floor_dbfs: float = -75.0) -> dict[str, Any]:
  """Synthesizes and writes one planned utterance; never raises (failures are returned).

  Returns:
    {"id", "engine", "ok", "duration" (s), "tts_seconds" (engine wall time), "error"}.
  """
  result = {"id": u.id, "engine": u.engine, "speaker": u.speaker, "ok": False, "duration": 0.0,
            "tts_seconds": 0.0, "error": ""}
  try:
    voice = tts.voice_from_speaker(u.speaker)
    rate = u.rate
    for attempt in range(2):
      t0 = time.perf_counter()
      audio, sr = tts.synthesize(voice, u.tts_text, rate=rate, pitch=u.pitch, seed=u.seed)
      result["tts_seconds"] += time.perf_counter() - t0
      pcm = _to_pcm16(audio, sr, u.peak_dbfs, trim, noise_floor_dbfs, u.seed)
      duration = len(pcm) / SAMPLE_RATE
      if duration <= max_seconds:
        break
      if attempt == 1 or rate * duration / max_seconds * 1.05 > _MAX_RATE:
        raise tts.TTSError(f"audio of {duration:.1f} s exceeds max_seconds={max_seconds} "
                           f"(at rate {rate:.2f})")
      rate = rate * duration / max_seconds * 1.05
    if duration < _MIN_SECONDS:
      raise tts.TTSError(f"audio of {duration:.2f} s is shorter than {_MIN_SECONDS} s")
    _write_flac_atomic(os.path.join(out_dir, u.relpath), pcm)
    result.update(ok=True, duration=duration)
  except Exception as e:  # pylint: disable=broad-except
    # One bad utterance must not stop the build; it is reported in failures.jsonl / summary.
    result["error"] = f"{type(e).__name__}: {e}"
  return result


def _task(args: tuple[PlannedUtterance, str, dict[str, Any]]) -> dict[str, Any]:
  u, out_dir, options = args
  return synthesize_utterance(u, out_dir, **options)


def _run_tasks(tasks: list[tuple], num_workers: int, progress: bool) -> Iterable[dict[str, Any]]:
  """Yields results as they complete (in-process for one worker, else a spawn pool)."""
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  bar = tqdm(total=len(tasks), unit="utt", desc="synthesizing", disable=not progress or not tasks,
             smoothing=0.05, mininterval=0.1 if sys.stderr.isatty() else 10.0)
  try:
    if num_workers <= 1 or len(tasks) <= 1:
      for t in tasks:
        yield _task(t)
        bar.update()
      return
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold JAX threads
    chunk = max(1, min(8, len(tasks) // (num_workers * 8)))
    with ctx.Pool(num_workers) as pool:
      for r in pool.imap_unordered(_task, tasks, chunksize=chunk):
        yield r
        bar.update()
  finally:
    bar.close()


# ----------------------------------------------------------------------------------------------
# Build.

def _write_json(path: str, obj: Any) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=1, ensure_ascii=False)
    f.write("\n")
  os.replace(tmp, path)


def _write_jsonl(path: str, rows: Iterable[Mapping[str, Any]]) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    for row in rows:
      f.write(json.dumps(row, ensure_ascii=False) + "\n")
  os.replace(tmp, path)


def _read_failures(path: str) -> dict[str, dict[str, Any]]:
  """id -> failure record; a torn last line (killed run) is ignored."""
  out = {}
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      for line in f:
        try:
          row = json.loads(line)
        except json.JSONDecodeError:
          continue
        out[row["id"]] = row
  return out


def _clean_stale_tmp(out_dir: str) -> None:
  for path in glob.glob(os.path.join(out_dir, "audio", "*", "*.tmp")):
    os.remove(path)


def _audio_duration(path: str) -> float:
  info = sf.info(path)
  return info.frames / info.samplerate


def _describe_voices(speakers: Iterable[str]) -> dict[str, list[str]]:
  """engine -> voice names; espeak-ng as "<n> accents x <variants>" for brevity."""
  by_engine: dict[str, set[str]] = collections.defaultdict(set)
  for speaker in speakers:
    engine, _, name = speaker.partition("/")
    by_engine[engine].add(name)
  out = {}
  for engine, names in sorted(by_engine.items()):
    if engine == tts.ESPEAK:
      accents = sorted({n.partition("+")[0] for n in names})
      variants = sorted({n.partition("+")[2] for n in names})
      out[engine] = [f"{len(accents)} accents ({', '.join(accents)}) x {len(variants)} variants "
                     f"({', '.join(variants)})"]
    else:
      out[engine] = sorted(names)
  return out


def _summarize(plan: Plan, manifests: Mapping[str, list[manifest.Utterance]],
               failures: Mapping[str, Mapping[str, Any]], cfg: Mapping[str, Any]) -> dict:
  source_of = {u.id: u.source for us in plan.utterances.values() for u in us}
  splits = {}
  for split in SPLITS:
    utts = manifests[split]
    seconds = [u.duration for u in utts]
    splits[split] = {
        "utterances": len(utts),
        "planned": len(plan.utterances[split]),
        "sentences": len({u.text for u in utts}),
        "hours": round(sum(seconds) / 3600.0, 4),
        "mean_seconds": round(sum(seconds) / max(1, len(utts)), 2),
        "max_seconds": round(max(seconds, default=0.0), 2),
        "engines": dict(sorted(collections.Counter(u.engine for u in utts).items())),
        "sources": dict(sorted(collections.Counter(source_of[u.id] for u in utts).items())),
        "voices": _describe_voices(u.speaker for u in utts),
        "speakers": sorted({u.speaker for u in utts}),
    }
  reasons = collections.Counter(r["reason"] for r in plan.rejected)
  return {
      "fingerprint": fingerprint(cfg),
      "sample_rate": SAMPLE_RATE,
      "splits": splits,
      "rejected_sentences": {"total": len(plan.rejected),
                             "by_reason": dict(sorted(reasons.items())),
                             "listed_in": "rejected_sentences.jsonl"},
      "failed_utterances": [dict(failures[k]) for k in sorted(failures)],
  }


def format_summary(summary: Mapping[str, Any]) -> str:
  """The summary as a plain-text table."""
  lines = [f"{'split':<6} {'utts':>6} {'hours':>7} {'mean s':>7} {'max s':>6} {'voices':>7}  "
           "engines"]
  for split in SPLITS:
    s = summary["splits"][split]
    engines = ", ".join(f"{e} {n}" for e, n in s["engines"].items())
    lines.append(f"{split:<6} {s['utterances']:>6} {s['hours']:>7.3f} {s['mean_seconds']:>7.2f} "
                 f"{s['max_seconds']:>6.2f} {len(s['speakers']):>7}  {engines}")
  for split in SPLITS:
    for engine, names in summary["splits"][split]["voices"].items():
      lines.append(f"  {split} {engine}: {', '.join(names)}")
  rej = summary["rejected_sentences"]
  lines.append(f"rejected sentences: {rej['total']} ("
               + ", ".join(f"{r}: {n}" for r, n in rej["by_reason"].items()) + ")")
  failed = summary["failed_utterances"]
  lines.append(f"failed utterances: {len(failed)}"
               + "".join(f"\n  {f['id']} {f['speaker']}: {f['error']}" for f in failed[:20])
               + ("\n  ..." if len(failed) > 20 else ""))
  return "\n".join(lines)


def build_corpus(corpus_cfg: Any, out_dir: str, *, retry_failed: bool = False,
                 progress: bool = True, verbose: bool = True) -> dict[str, Any]:
  """Builds (or finishes, or reuses) the synthetic corpus in `out_dir`.

  Args:
    corpus_cfg: the corpus spec (`config.data.corpus`; a ConfigDict or mapping whose keys are
      those of `DEFAULT_CORPUS`; absent keys take the defaults).
    out_dir: corpus folder (created).
    retry_failed: synthesize again utterances that failed in an earlier run.
    progress: show a tqdm progress bar.
    verbose: print the summary table.

  Returns:
    The summary (as in `summary.json`) plus a "run" entry: {"synthesized", "failed",
    "wall_seconds", "audio_seconds", "per_engine": {engine: {"utterances", "audio_seconds",
    "tts_seconds", "x_realtime_per_core"}}}.

  Raises:
    CorpusConfigError: invalid config, or `out_dir` built from a different config.
    tts.TTSError: an engine of `corpus_cfg.engines` is not installed.
  """
  t_start = time.perf_counter()
  cfg = resolve_config(corpus_cfg)
  for engine in cfg["engines"]:
    tts.check_engine(engine)
  os.makedirs(out_dir, exist_ok=True)
  _check_or_write_config(out_dir, cfg)
  plan = plan_corpus(cfg)
  all_utts = [u for split in SPLITS for u in plan.utterances[split]]
  _write_jsonl(os.path.join(out_dir, "plan.jsonl"),
               (dataclasses.asdict(u) | {"path": u.relpath} for u in all_utts))
  _write_jsonl(os.path.join(out_dir, "rejected_sentences.jsonl"), plan.rejected)

  failures_path = os.path.join(out_dir, "failures.jsonl")
  planned_ids = {u.id for u in all_utts}
  failures = {} if retry_failed else {
      k: v for k, v in _read_failures(failures_path).items() if k in planned_ids}
  _write_jsonl(failures_path, (failures[k] for k in sorted(failures)))
  _clean_stale_tmp(out_dir)

  todo = [u for u in all_utts
          if u.id not in failures and not os.path.exists(os.path.join(out_dir, u.relpath))]
  num_workers = int(cfg["num_workers"]) or os.cpu_count() or 1
  options = {"max_seconds": float(cfg["max_seconds"]), "trim": bool(cfg["trim_silence"]),
             "noise_floor_dbfs": float(cfg["noise_floor_dbfs"])}
  tasks = [(u, out_dir, options) for u in todo]
  per_engine = collections.defaultdict(lambda: collections.Counter())
  t_synth = time.perf_counter()
  with open(failures_path, "a", encoding="utf-8") as ff:
    for r in _run_tasks(tasks, min(num_workers, max(1, len(tasks))), progress):
      stats = per_engine[r["engine"]]
      stats["utterances"] += 1
      stats["audio_seconds"] += r["duration"]
      stats["tts_seconds"] += r["tts_seconds"]
      if not r["ok"]:
        record = {k: r[k] for k in ("id", "speaker", "error")}
        failures[r["id"]] = record
        ff.write(json.dumps(record) + "\n")
        ff.flush()
        logging.warning("synthesis failed for %s (%s): %s", r["id"], r["speaker"], r["error"])
  synth_wall = time.perf_counter() - t_synth

  manifests = {}
  for split in SPLITS:
    rows = []
    for u in plan.utterances[split]:
      path = os.path.join(out_dir, u.relpath)
      if u.id in failures or not os.path.exists(path):
        continue
      rows.append(manifest.Utterance(id=u.id, path=os.path.abspath(path), text=u.text,
                                     speaker=u.speaker, engine=u.engine,
                                     duration=round(_audio_duration(path), 4)))
    manifest.write_manifest(os.path.join(out_dir, f"{split}.jsonl"), rows)
    manifests[split] = rows
  summary = _summarize(plan, manifests, failures, cfg)
  _write_json(os.path.join(out_dir, "summary.json"), summary)

  run = {
      "synthesized": len(todo),
      "failed": sum(1 for u in todo if u.id in failures),
      "workers": num_workers,
      "synthesis_wall_seconds": round(synth_wall, 2),
      "wall_seconds": round(time.perf_counter() - t_start, 2),
      "audio_seconds": round(sum(s["audio_seconds"] for s in per_engine.values()), 2),
      "per_engine": {
          e: {"utterances": s["utterances"], "audio_seconds": round(s["audio_seconds"], 2),
              "tts_seconds": round(s["tts_seconds"], 2),
              "x_realtime_per_core": round(s["audio_seconds"] / max(s["tts_seconds"], 1e-9), 1)}
          for e, s in sorted(per_engine.items())},
  }
  with open(os.path.join(out_dir, "build_log.jsonl"), "a", encoding="utf-8") as f:
    f.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **run}) + "\n")
  if verbose:
    print(format_summary(summary))
    if todo:
      speed = run["audio_seconds"] / max(synth_wall, 1e-9)
      print(f"synthesized {len(todo)} utterances ({run['audio_seconds'] / 3600:.3f} h) in "
            f"{synth_wall:.1f} s with {num_workers} worker(s): {speed:.1f} audio s per wall s")
    else:
      print(f"{out_dir}: corpus complete, nothing to synthesize")
  return {**summary, "run": run}
