"""A degraded copy of a manifest: same utterances and transcripts, new audio, seeded per id."""

import json
import os

import numpy as np
import pytest
import soundfile as sf

from distill_jax.audio import degrade
from distill_jax.audio import io as audio_io
from distill_jax.data import degraded, manifest


def test_copy_keeps_the_utterances_and_degrades_the_audio(tiny_corpus, tmp_path):
  src = os.path.join(tiny_corpus, "dev.jsonl")
  cfg = degrade.DegradeConfig(rt60_range=(0.0, 0.0), snr_db_range=(5.0, 5.0))
  out = degraded.degrade_manifest(src, str(tmp_path / "noisy"), cfg, seed=3, progress=False)
  before, after = manifest.read_manifest(src), manifest.read_manifest(out)
  assert [(u.id, u.text, u.speaker, u.engine) for u in before] == [
      (u.id, u.text, u.speaker, u.engine) for u in after]
  for b, a in zip(before, after):
    clean, noisy = audio_io.load_audio(b.path), audio_io.load_audio(a.path)
    assert noisy.shape == clean.shape and abs(a.duration - clean.size / 16000) < 1e-9
    snr = 10 * np.log10(degrade.active_power(clean) / np.mean((noisy - clean) ** 2))
    assert abs(snr - 5.0) < 0.2, (a.id, snr)  # 16-bit PCM rounding and the clip guard
  with open(tmp_path / "noisy" / "dev_params.jsonl") as f:
    assert len(f.read().splitlines()) == len(before)


def test_seeded_per_utterance_and_rerun_is_a_no_op(tiny_corpus, tmp_path):
  src = os.path.join(tiny_corpus, "test.jsonl")
  cfg = degrade.DegradeConfig()
  a = degraded.degrade_manifest(src, str(tmp_path / "a"), cfg, seed=1, progress=False)
  uid = manifest.read_manifest(a)[0].id
  wav = tmp_path / "a" / "audio" / f"{uid}.wav"
  mtime = os.path.getmtime(wav)
  degraded.degrade_manifest(src, str(tmp_path / "a"), cfg, seed=1, progress=False)
  assert os.path.getmtime(wav) == mtime
  # A subset gives the same audio for the same id (the seed is (seed, id), not the position).
  sub = tmp_path / "sub.jsonl"
  manifest.write_manifest(str(sub), manifest.read_manifest(src)[:1])
  b = degraded.degrade_manifest(str(sub), str(tmp_path / "b"), cfg, seed=1, progress=False)
  np.testing.assert_array_equal(sf.read(wav)[0],
                                sf.read(manifest.read_manifest(b)[0].path)[0])
  with pytest.raises(ValueError, match="degraded with"):
    degraded.degrade_manifest(src, str(tmp_path / "a"), cfg, seed=2, progress=False)
  with open(tmp_path / "a" / degraded.PARAMS_FILE) as f:
    assert json.load(f)["seed"] == 1


def test_missing_audio_names_the_file(tmp_path):
  src = tmp_path / "m.jsonl"
  manifest.write_manifest(str(src), [manifest.Utterance("u1", str(tmp_path / "nope.wav"), "hi")])
  with pytest.raises(audio_io.AudioError, match="nope.wav"):
    degraded.degrade_manifest(str(src), str(tmp_path / "o"), degrade.DegradeConfig(),
                              progress=False)
