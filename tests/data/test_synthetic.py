"""Tests of the synthetic TTS corpus builder (distill_jax/data/synthetic.py, tts.py).

The spec, sentence lists and plan have their own tests (test_corpus_spec.py,
test_sentences.py, test_corpus_plan.py); these build small corpora with the real engines.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
import soundfile as sf

from configs import corpus as corpus_configs
from distill_jax import text as text_lib
from distill_jax.data import corpus_plan
from distill_jax.data import manifest
from distill_jax.data import synthetic
from distill_jax.data import tts

SPLITS = synthetic.SPLITS


def _small_config(**overrides):
  """A handful of short utterances per split, all three engines, in-process."""
  values = {"train_hours": 0.05, "max_train_utterances": 6, "dev_utterances": 3,
            "test_utterances": 3, "max_words": 6, "num_workers": 1}
  values.update(overrides)
  return corpus_configs.get_corpus_config("default", **values)


def _build(cfg, out, **kwargs):
  return synthetic.build_corpus(cfg, str(out), progress=False, verbose=False, **kwargs)


def _read(out):
  return {s: manifest.read_manifest(os.path.join(out, f"{s}.jsonl")) for s in SPLITS}


def _pcm(path):
  return sf.read(path, dtype="int16")[0]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("small"))
  result = _build(_small_config(), out)
  return out, result


# ---------------------------------------------------------------------------------------------
# A small build.

def test_manifests_audio_and_splits(small):
  out, result = small
  m = _read(out)
  assert [len(m[s]) for s in SPLITS] == [6, 3, 3]
  assert result["run"]["synthesized"] == 12 and result["run"]["failed"] == 0
  for split in SPLITS:
    assert {u.engine for u in m[split]} == set(tts.ENGINES)
    for u in m[split]:
      assert u.path == os.path.join(out, "audio", split, f"{u.id}.flac")
      info = sf.info(u.path)
      assert (info.samplerate, info.channels, info.format, info.subtype) == (
          16000, 1, "FLAC", "PCM_16")
      assert abs(info.frames / info.samplerate - u.duration) < 1e-3
      assert 0.3 < u.duration <= 15.0
      assert u.text == text_lib.normalize(u.text) and u.speaker.startswith(u.engine + "/")
  texts = {s: {u.text for u in m[s]} for s in SPLITS}
  assert not texts["train"] & texts["test"] and not texts["train"] & texts["dev"]
  assert not texts["dev"] & texts["test"]
  train_voices = {tts.voice_from_speaker(u.speaker).group for u in m["train"] + m["dev"]}
  test_voices = {tts.voice_from_speaker(u.speaker).group for u in m["test"]}
  assert not train_voices & test_voices
  with open(os.path.join(out, "summary.json")) as f:
    summary = json.load(f)
  assert summary["splits"]["train"]["utterances"] == 6
  assert summary["rejected_sentences"]["total"] > 0
  assert summary["failed_utterances"] == []


def test_deterministic_across_dirs_and_worker_counts(small, tmp_path):
  out, _ = small
  other = tmp_path / "again"
  _build(_small_config(num_workers=2), other)
  m1, m2 = _read(out), _read(str(other))
  for split in SPLITS:
    rows1 = [(u.id, u.text, u.speaker, u.engine, u.duration) for u in m1[split]]
    rows2 = [(u.id, u.text, u.speaker, u.engine, u.duration) for u in m2[split]]
    assert rows1 == rows2
    for a, b in zip(m1[split], m2[split]):
      np.testing.assert_array_equal(_pcm(a.path), _pcm(b.path))


def test_second_build_is_a_noop(small):
  out, _ = small
  before = {u.path: os.path.getmtime(u.path) for us in _read(out).values() for u in us}
  result = _build(_small_config(), out)
  assert result["run"]["synthesized"] == 0
  assert {u.path: os.path.getmtime(u.path) for us in _read(out).values() for u in us} == before


def test_resume_restores_deleted_files(small, tmp_path):
  out, _ = small
  copy = str(tmp_path / "copy")
  shutil.copytree(out, copy)
  m = _read(copy)
  victims = [m["train"][1], m["dev"][0], m["test"][2]]
  for u in victims:
    os.remove(u.path)
  with open(victims[0].path + ".123.tmp", "wb") as f:  # debris of a killed run
    f.write(b"partial")
  result = _build(_small_config(), copy)
  assert result["run"]["synthesized"] == 3
  assert _read(copy) == {s: [dataclass_with_root(u, out, copy) for u in us]
                         for s, us in _read(out).items()}
  for u in victims:
    np.testing.assert_array_equal(_pcm(u.path), _pcm(u.path.replace(copy, out)))
  assert not [p for p in os.listdir(os.path.dirname(victims[0].path)) if p.endswith(".tmp")]


def dataclass_with_root(u, old_root, new_root):
  return dataclasses.replace(u, path=u.path.replace(old_root, new_root))


def test_different_config_in_same_folder_is_an_error(small):
  out, _ = small
  with pytest.raises(synthetic.CorpusConfigError, match=r"max_words \(6 -> 7\)"):
    _build(_small_config(max_words=7), out)
  # num_workers does not change the corpus.
  assert _build(_small_config(num_workers=3), out)["run"]["synthesized"] == 0


def test_tts_failure_is_reported_not_fatal(tmp_path, monkeypatch):
  cfg = _small_config(engines=("espeak-ng",))
  real = tts.synthesize

  def flaky(voice, text, **kwargs):
    if voice.speaker in failing:
      raise tts.TTSError(f"{voice.speaker}: simulated crash")
    return real(voice, text, **kwargs)

  plan = corpus_plan.plan_corpus(cfg)
  failing = {plan.utterances["dev"][1].speaker}
  monkeypatch.setattr(tts, "synthesize", flaky)
  result = _build(cfg, tmp_path)
  failed_ids = {f["id"] for f in result["failed_utterances"]}
  assert "dev-000001" in failed_ids and result["run"]["failed"] == len(failed_ids)
  assert all("simulated crash" in f["error"] for f in result["failed_utterances"])
  assert "dev-000001" not in {u.id for u in _read(str(tmp_path))["dev"]}
  # Later runs skip recorded failures (a no-op) unless asked to retry them.
  assert _build(cfg, tmp_path)["run"]["synthesized"] == 0
  failing.clear()
  result = _build(cfg, tmp_path, retry_failed=True)
  assert result["run"]["synthesized"] == len(failed_ids) and not result["failed_utterances"]
  assert len(_read(str(tmp_path))["dev"]) == 3


def test_tiny_corpus_fixture(tiny_corpus):
  m = _read(tiny_corpus)
  assert [len(m[s]) for s in SPLITS] == [40, 8, 8]
  assert all(len(u.text.split()) <= 8 for us in m.values() for u in us)
  assert {u.engine for u in m["train"]} == set(tts.ENGINES)
