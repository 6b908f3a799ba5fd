"""The synthetic-corpus spec: its keys and defaults, validation, and the fingerprint of a build.

`configs/corpus.py` turns `DEFAULT_CORPUS` into the locked ConfigDict experiments embed as
`config.data.corpus`; `resolve_config` turns any such spec (ConfigDict or mapping, absent keys
taking the defaults) into a validated plain dict, which is what `sentences`, `corpus_plan` and
`synthetic` read. A corpus folder records `content_config` and its `fingerprint`, so a rebuild
with another spec into the same folder is refused (`synthetic.build_corpus`).

Keys:
  seed                   keys every hash of the plan (sentence order, voice, rate, pitch, ...)
  train_hours            estimated hours of training speech to plan (`corpus_plan`)
  max_train_utterances   > 0: cap on the training utterance count as well
  dev_utterances         dev sentences (each spoken once)
  test_utterances        test sentences (each spoken once)
  engines                TTS engines taking turns (`tts.ENGINES`)
  sources                sentence lists of `data/text/` (`sentences.SOURCES`)
  min_words, max_words   sentence length bounds (normalized words)
  max_seconds            longest utterance (re-synthesized faster once, else a failure)
  rate_range             speaking-rate multipliers (per speaker sub-range, `corpus_plan`)
  pitch_range            F0 multipliers (idem)
  peak_dbfs_range        peak level of each file
  noise_floor_dbfs       seeded Gaussian noise (rms) added to every file; <= -120: none
  trim_silence           trim leading/trailing silence (`synthetic`)
  text_dir               folder of the sentence lists; "": the vendored `data/text/`
  num_workers            synthesis processes, 0: all cores (not part of the fingerprint)
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from distill_jax.data import sentences
from distill_jax.data import tts

FORMAT_VERSION = 1
SPLITS = ("train", "dev", "test")

# The corpus spec: `configs/corpus.py` turns this into the ConfigDict experiments embed as
# `config.data.corpus`. Keys absent from a given config take these values.
DEFAULT_CORPUS: dict[str, Any] = {
    "seed": 0,
    "train_hours": 1.0,
    "max_train_utterances": 0,  # 0: no cap beyond train_hours
    "dev_utterances": 200,
    "test_utterances": 200,
    "engines": tts.ENGINES,
    "sources": sentences.SOURCES,
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

# Audio facts the plan (duration estimates) and the synthesis share: silence kept at each end
# when trimming, and the shortest acceptable utterance.
TRIM_KEEP_S = 0.15
MIN_SECONDS = 0.3


class CorpusConfigError(ValueError):
  """The corpus config is invalid, or differs from the one a corpus folder was built with."""


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
  bad = [s for s in cfg["sources"] if s not in sentences.SOURCES]
  if bad or not cfg["sources"]:
    raise CorpusConfigError(f"corpus.sources={cfg['sources']!r}: choose from {sentences.SOURCES}")
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
  if cfg["train_hours"] < 0 or cfg["max_seconds"] <= MIN_SECONDS:
    raise CorpusConfigError("corpus.train_hours must be >= 0 and corpus.max_seconds > 0.3")
  return cfg


def content_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
  """The keys that determine the corpus, JSON-canonical (tuples as lists)."""
  keep = {k: v for k, v in cfg.items() if k not in NON_CONTENT_KEYS}
  keep["format_version"] = FORMAT_VERSION
  return json.loads(json.dumps(keep, sort_keys=True))


def fingerprint(cfg: Mapping[str, Any]) -> str:
  """16 hex digits of the SHA-256 of `content_config(cfg)`: equal for equal corpora."""
  blob = json.dumps(content_config(cfg), sort_keys=True).encode()
  return hashlib.sha256(blob).hexdigest()[:16]


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
  """"key (old -> new)" for every key whose value differs between two content configs."""
  keys = sorted(set(old) | set(new))
  return [f"{k} ({old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r})"
          for k in keys if old.get(k) != new.get(k)]
