"""Tests of the synthetic corpus plan (distill_jax/data/corpus_plan.py): splits, voices, hashes."""

from __future__ import annotations

import collections

from configs import corpus as corpus_configs
from distill_jax.data import corpus_plan
from distill_jax.data import corpus_spec
from distill_jax.data import tts

SPLITS = corpus_spec.SPLITS


def test_voice_splits_hold_out_test_voices():
  for engine in tts.ENGINES:
    groups = {s: {v.group for v in corpus_plan.split_voices(engine, s)} for s in SPLITS}
    assert groups["test"] and not groups["test"] & (groups["train"] | groups["dev"]), engine
  espeak = {s: {v.group for v in corpus_plan.split_voices(tts.ESPEAK, s)} for s in SPLITS}
  assert not espeak["dev"] & espeak["train"]
  # Every espeak-ng variant of the inventory is used, in exactly one split.
  variants = [v for s in SPLITS for v in corpus_plan.ESPEAK_VARIANT_SPLITS[s]]
  assert sorted(variants) == sorted(tts.ESPEAK_VARIANTS)


def test_plan_is_deterministic_disjoint_and_keyed_by_seed():
  cfg = corpus_configs.get_corpus_config("default", train_hours=0.1, dev_utterances=30,
                                         test_utterances=30)
  plan = corpus_plan.plan_corpus(cfg)
  assert plan == corpus_plan.plan_corpus(cfg)
  utts = plan.utterances
  assert [len(utts["dev"]), len(utts["test"])] == [30, 30]
  assert plan.n_sentences["dev"] == plan.n_sentences["test"] == 30
  # train_hours is met on estimated durations: the last utterance crosses the target.
  est = [u.est_seconds for u in utts["train"]]
  assert sum(est[:-1]) < 0.1 * 3600 <= sum(est)
  texts = {s: {u.text for u in utts[s]} for s in SPLITS}
  assert not texts["train"] & texts["dev"] and not texts["train"] & texts["test"]
  assert not texts["dev"] & texts["test"]
  for split in SPLITS:
    assert [u.id for u in utts[split]] == [f"{split}-{k:06d}" for k in range(len(utts[split]))]
    allowed = {v.speaker for e in tts.ENGINES for v in corpus_plan.split_voices(e, split)}
    for k, u in enumerate(utts[split]):
      assert u.engine == tts.ENGINES[k % 3] and u.speaker in allowed
      assert 0.85 <= u.rate <= 1.2 and 0.88 <= u.pitch <= 1.12 and -12 <= u.peak_dbfs <= -1
  # Another seed reorders sentences and redraws voices.
  other = corpus_plan.plan_corpus(corpus_configs.get_corpus_config(
      "default", seed=1, train_hours=0.1, dev_utterances=30, test_utterances=30))
  assert {u.text for u in other.utterances["test"]} != texts["test"]
  assert [u.speaker for u in other.utterances["train"][:20]] != [
      u.speaker for u in utts["train"][:20]]


def test_rate_stays_in_the_speakers_sub_range():
  """Each speaker's rates lie within half of `rate_range` around its own centre."""
  plan = corpus_plan.plan_corpus(corpus_configs.get_corpus_config("default", train_hours=0.3))
  by_speaker = collections.defaultdict(list)
  for u in plan.utterances["train"]:
    by_speaker[u.speaker].append(u.rate)
  spread = [max(r) - min(r) for r in by_speaker.values() if len(r) >= 5]
  assert spread and max(spread) <= (1.2 - 0.85) / 2 + 1e-4


def test_language_model_text_is_the_train_sentence_split():
  cfg = corpus_configs.get_corpus_config("default")
  lm = corpus_plan.language_model_text(cfg)
  plan = corpus_plan.plan_corpus(cfg)
  assert len(lm) == plan.n_sentences["train"] and len(set(lm)) == len(lm)
  held_out = {u.text for s in ("dev", "test") for u in plan.utterances[s]}
  assert not held_out & set(lm)
  assert {u.text for u in plan.utterances["train"]} <= set(lm)
