"""benchmarks/whisper_window.py end to end on a tiny random Whisper CTC teacher (a 2 s window,
tests/models/test_whisper_ctc.py's): each mode's transcripts equal those of the teacher run on
each utterance's own window (or its packed window, its frames cut out), computed here; the
counts, padded fractions and the listed skip follow from the utterances. The benchmark runs as
a command (pinned to one CPU)."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import soundfile as sf

from distill_jax import text as text_lib
from distill_jax.convert import hf_whisper, teacher_folder, whisper_ctc_folder
from distill_jax.data import manifest as manifest_lib
from distill_jax.data import packing
from distill_jax.models import whisper as whisper_lib
from distill_jax.models.whisper_teacher import WhisperCtcTeacher
from tests.models import test_whisper_ctc as tiny

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VOCAB = text_lib.CharTokenizer().vocab
WINDOW = 32000  # the tiny Whisper's window: 100 positions = 200 mel frames = 2 s
SECONDS = {"a": 0.5, "b": 0.7, "c": 0.305, "d": 1.1, "e": 0.9, "f": 0.4}  # c: 4880 samples
TEXTS = {"a": "one", "b": "Two words", "c": "three", "d": "four five", "e": "six", "f": "seven"}


def _teacher_folder(tmp_path) -> str:
  whisper_dir = hf_whisper.save_hf_folder(tiny.TINY, whisper_lib.init_params(tiny.TINY, seed=1),
                                          str(tmp_path / "whisper"))
  _, hf_params = hf_whisper.load_hf_folder(whisper_dir)
  model = tiny.tiny_model(len(VOCAB))
  params = {**tiny.tiny_params(model), "encoder": hf_params["model"]["encoder"]}
  out = str(tmp_path / "teacher")
  whisper_ctc_folder.save_folder(out, model, params, VOCAB, whisper_dir)
  return out


def _manifest(tmp_path) -> tuple[str, dict[str, np.ndarray]]:
  """A manifest of the utterances above plus one of 2.5 s (longer than the window); int16
  WAV files of small amplitude, so the pipeline's int16 round trip gives k / 32767 exactly."""
  rng = np.random.RandomState(0)
  audio, utts = {}, []
  for uid, seconds in list(SECONDS.items()) + [("long", 2.5)]:
    k = rng.randint(-3000, 3000, size=int(round(seconds * 16000))).astype(np.int16)
    path = str(tmp_path / f"{uid}.wav")
    sf.write(path, k, 16000, subtype="PCM_16")
    audio[uid] = k.astype(np.float32) / 32767.0
    utts.append(manifest_lib.Utterance(uid, path, TEXTS.get(uid, "long"), duration=seconds))
  path = str(tmp_path / "test.jsonl")
  manifest_lib.write_manifest(path, utts)
  return path, audio


def _greedy(log_probs: np.ndarray, tokenizer) -> str:
  """Best path of [T, V] log-probs in numpy: arg-max, merge repeats, drop blanks."""
  best = np.argmax(log_probs, -1)
  keep = [int(t) for j, t in enumerate(best)
          if t != tokenizer.blank_id and (j == 0 or t != best[j - 1])]
  return tokenizer.decode(keep)


@pytest.mark.slow  # three modes end to end in a pinned subprocess: about 30 s on 2 CPUs
def test_modes_decode_each_utterance_as_its_own_window_does(tmp_path):
  folder = _teacher_folder(tmp_path)
  manifest, audio = _manifest(tmp_path)
  out = str(tmp_path / "window.json")
  cmd = [sys.executable, "-m", "benchmarks.whisper_window", f"--teacher={folder}",
         f"--manifest={manifest}", f"--out={out}", "--windows_per_batch=3",
         "--short_buckets=1", "--short_batch_seconds=5", "--threads=1"]
  res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False, timeout=1200)
  assert res.returncode == 0, res.stderr[-3000:]
  with open(out, encoding="utf-8") as f:
    result = json.load(f)
  meta, modes = result["meta"], result["modes"]
  assert "| mode | window |" in res.stdout and "| packed | 2 s |" in res.stdout
  assert meta["utterances"] == 6 and meta["window_samples"] == WINDOW
  assert [(s["id"], s["reason"]) for s in meta["skipped"]] == [("long", "longer_than_window")]
  assert meta["threads"] == 1 and len(meta["cpus"]) == 1
  assert "intra_op_parallelism_threads=1" in meta["xla_flags"]

  ids = list(SECONDS)
  lengths = [len(audio[u]) for u in ids]
  speech = sum(lengths)
  packed = packing.pack(lengths, WINDOW, 6400, 320)
  assert len(packed.windows) == 3 and not packed.too_long
  # Short buckets of 16000 and 32000 samples, batch sizes 5 and 2: a, b, c, e, f | d.
  expect = {"full": (2, {"3": 2}, 6 * WINDOW), "packed": (1, {"3": 1}, 3 * WINDOW),
            "short": (2, {"1": 1, "5": 1}, 5 * 16000 + WINDOW)}
  for mode, (forwards, sizes, fed) in expect.items():
    r = modes[mode]
    assert (r["forwards"], r["batch_sizes"]) == (forwards, sizes), mode
    np.testing.assert_allclose(r["padded_fraction"], 1 - speech / fed, rtol=1e-12)
    assert r["cpu_s_per_audio_hour"] > 0 and 0 <= r["cer"] and 0 <= r["wer"]
    assert sorted(r["hypotheses"]) == sorted(ids)
  assert modes["short"]["window_samples"] == 0 and modes["full"]["window_samples"] == WINDOW

  # The same transcripts, computed here: each utterance alone at the start of its window
  # (full: 2 s; short: its bucket's length), or in its packed window, its frames cut out.
  teacher, tokenizer = teacher_folder.load_folder(folder)

  @functools.lru_cache(maxsize=None)
  def forward(window_samples):
    return jax.jit(WhisperCtcTeacher(
        dataclasses.replace(teacher.model, window_samples=window_samples), teacher.params,
        teacher.vocab).forward)

  def log_probs(window_samples, wav, spans):
    pad = np.ones_like(wav)
    for start, n in spans:
      pad[start:start + n] = 0.0
    return np.asarray(forward(window_samples)(teacher.params, wav[None], pad[None]).log_probs[0])

  assert teacher.num_frames(4880) == 15  # (4880 // 160 + 1) // 2: 4880 % 320 = 80 < 160
  for u, n in zip(ids, lengths):
    frames = teacher.num_frames(n)
    alone = np.zeros(WINDOW, np.float32)
    alone[:n] = audio[u]
    full = _greedy(log_probs(WINDOW, alone, [(0, n)])[:frames], tokenizer)
    short = alone[:WINDOW if u == "d" else 16000]
    short = _greedy(log_probs(0, short, [(0, n)])[:frames], tokenizer)
    assert (modes["full"]["hypotheses"][u], modes["short"]["hypotheses"][u]) == (full, short), u
  for window in packed.windows:
    wav = np.zeros(WINDOW, np.float32)
    for i, start in window:
      wav[start:start + lengths[i]] = audio[ids[i]]
    lp = log_probs(WINDOW, wav, [(start, lengths[i]) for i, start in window])
    for i, start in window:
      first, stop = packing.frame_range(start, teacher.num_frames(lengths[i]), 320)
      assert modes["packed"]["hypotheses"][ids[i]] == _greedy(lp[first:stop], tokenizer)
  assert any(modes["full"]["hypotheses"].values())  # the random head emits characters


def test_bad_flags_are_named():
  res = subprocess.run([sys.executable, "-m", "benchmarks.whisper_window", "--teacher=x",
                        "--manifest=y", "--out=z", "--modes=full,bogus"], cwd=ROOT,
                       capture_output=True, text=True, check=False, timeout=60)
  assert res.returncode != 0 and "--modes=full,bogus" in res.stderr
