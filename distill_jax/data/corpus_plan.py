"""The corpus plan: which sentence, voice, rate, pitch and level each utterance gets (no audio).

`plan_corpus(corpus_cfg)` is a pure function of the corpus spec (`corpus_spec`) and the sentence
lists (`sentences`): every choice is a keyed hash, stable across Python / NumPy versions and
processes, so a build is deterministic for a seed and independent of the worker count or order.
`synthetic.build_corpus` synthesizes the plan; `language_model_text` gives the training split's
text for an n-gram LM.

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
per utterance inside a speaker's own sub-range (centre keyed by speaker, half width a quarter of
`rate_range`/`pitch_range`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from typing import Any, Mapping, Sequence

from distill_jax.data import corpus_spec
from distill_jax.data import sentences as sentences_lib
from distill_jax.data import tts
from distill_jax.data.sentences import Sentence

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
# Sentence splits.

def split_sentences(sentences: Sequence[Sentence],
                    cfg: Mapping[str, Any]) -> dict[str, list[Sentence]]:
  """Disjoint sentence sets: hash order; test first, then dev, train the rest."""
  order = sorted(sentences, key=lambda s: (_uniform(cfg["seed"], "sentence", s.text), s.text))
  n_test, n_dev = int(cfg["test_utterances"]), int(cfg["dev_utterances"])
  if n_test + n_dev >= len(order):
    raise corpus_spec.CorpusConfigError(
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
  cfg = corpus_spec.resolve_config(corpus_cfg)
  sentences, _ = sentences_lib.load_sentences(cfg)
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
  """One utterance to synthesize (a row of `plan.jsonl`); pickled to the synthesis workers."""
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
  """Expected trimmed duration of `text` spoken by `engine` at `rate` (meets `train_hours`)."""
  return len(text) * SECONDS_PER_CHAR[engine] / rate + 2 * corpus_spec.TRIM_KEEP_S


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
  """The whole corpus minus its audio."""
  utterances: dict[str, list[PlannedUtterance]]
  rejected: list[dict[str, str]]
  n_sentences: dict[str, int]  # distinct sentences per split


def plan_corpus(corpus_cfg: Any) -> Plan:
  """Everything but the audio: which sentence, voice, rate and pitch each utterance gets."""
  cfg = corpus_spec.resolve_config(corpus_cfg)
  sentences, rejected = sentences_lib.load_sentences(cfg)
  by_split = split_sentences(sentences, cfg)
  utts = {
      "test": [_plan_one(cfg, "test", k, s) for k, s in enumerate(by_split["test"])],
      "dev": [_plan_one(cfg, "dev", k, s) for k, s in enumerate(by_split["dev"])],
      "train": _plan_train(cfg, by_split["train"]),
  }
  return Plan(utts, rejected, {s: len(v) for s, v in by_split.items()})
