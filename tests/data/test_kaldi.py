"""Kaldi data directories (distill_jax/data/kaldi.py), as a config source and in make_manifest."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from configs import base
from distill_jax.data import kaldi, sources
from distill_jax.data.manifest import read_manifest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SR = 16000


def _wav(path, seconds, sr=SR, subtype="PCM_16", seed=0):
  """Seeded noise (every sample distinct enough that a shifted cut cannot match)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  x = np.random.default_rng(seed).uniform(-0.5, 0.5, int(round(seconds * sr)))
  sf.write(path, x, sr, subtype=subtype)
  return path


def _write(d, name, lines):
  os.makedirs(d, exist_ok=True)
  with open(os.path.join(d, name), "w", encoding="utf-8") as f:
    f.write("".join(line + "\n" for line in lines))


@pytest.fixture
def corpus(tmp_path):
  """corpus/wav/{a,b}.wav (relative in wav.scp), an absolute path for c, data/train as the dir."""
  root = tmp_path / "corpus"
  _wav(str(root / "wav" / "a.wav"), 0.5, seed=1)
  _wav(str(root / "wav" / "b.wav"), 0.75, seed=2)
  c = _wav(str(tmp_path / "elsewhere" / "c.flac"), 1.0, sr=8000, seed=3)
  d = str(root / "data")
  _write(d, "wav.scp", ["spk1-a wav/a.wav", "spk1-b wav/b.wav", f"spk2-c {c}"])
  _write(d, "text", ["spk1-a HELLO WORLD", "spk1-b GOOD  MORNING ", "spk2-c YES"])
  _write(d, "utt2spk", ["spk1-a spk1", "spk1-b spk1", "spk2-c spk2"])
  _write(d, "spk2gender", ["spk1 f", "spk2 m"])
  return tmp_path, d


def test_good_dir(corpus):
  tmp_path, d = corpus
  data = kaldi.read_kaldi_dir(d)
  rows = [(u.id, u.recording, u.text, u.speaker, u.gender, u.labelled) for u in data.utterances]
  assert rows == [
      ("spk1-a", "spk1-a", "HELLO WORLD", "spk1", "f", True),
      ("spk1-b", "spk1-b", "GOOD  MORNING", "spk1", "f", True),
      ("spk2-c", "spk2-c", "YES", "spk2", "m", True)]
  assert [u.path for u in data.utterances] == [
      str(tmp_path / "corpus/wav/a.wav"), str(tmp_path / "corpus/wav/b.wav"),
      str(tmp_path / "elsewhere/c.flac")]
  assert [u.duration for u in data.utterances] == [0.5, 0.75, 1.0]  # frames / rate, exact
  assert not data.report.skipped and data.report.kept == 3 and not data.has_segments
  assert data.genders == {"spk1": "f", "spk2": "m"}
  utts = kaldi.to_utterances(data)
  assert [(u.id, u.path, u.engine, u.duration) for u in utts] == [
      (k.id, k.path, "kaldi", k.duration) for k in data.utterances]


def test_missing_entries_are_counted_and_listed(corpus):
  tmp_path, d = corpus
  _write(d, "wav.scp", ["spk1-a wav/a.wav", "spk1-b wav/b.wav", "spk2-c wav/gone.wav",
                        "spk3-d wav/a.wav", "spk3-e wav/a.wav"])
  _write(d, "text", ["spk1-a HELLO WORLD", "spk2-c YES", "spk3-d", "spk3-e NO SPEAKER",
                     "spk9-z ORPHAN TEXT"])
  _write(d, "utt2spk", ["spk1-a spk1", "spk1-b spk1", "spk2-c spk2", "spk3-d spk3"])
  data = kaldi.read_kaldi_dir(d)
  assert [u.id for u in data.utterances] == ["spk1-a"]
  skipped = {s["id"]: s["reason"] for s in data.report.skipped}
  assert skipped == {"spk1-b": "no_transcript", "spk2-c": "missing_audio",
                     "spk3-d": "empty_transcript", "spk3-e": "no_speaker",
                     "spk9-z": "no_audio_entry"}
  assert data.report.counts() == {"no_transcript": 1, "missing_audio": 1, "empty_transcript": 1,
                                  "no_speaker": 1, "no_audio_entry": 1}
  detail = {s["id"]: s["detail"] for s in data.report.skipped}
  assert detail["spk1-b"].endswith(f"wav.scp:2: utterance not in {d}/text")
  assert f"wav.scp:3: recording 'spk2-c': {tmp_path}/corpus/wav/gone.wav does not exist" in (
      detail["spk2-c"])
  assert detail["spk9-z"].endswith("text:5: id not in wav.scp")


def test_unlabelled_audio_is_kept_and_flagged(corpus):
  _, d = corpus
  _write(d, "text", ["spk1-a HELLO WORLD", "spk1-b"])
  data = kaldi.read_kaldi_dir(d, require_text=False)
  assert [(u.id, u.text, u.labelled) for u in data.utterances] == [
      ("spk1-a", "HELLO WORLD", True), ("spk1-b", "", False), ("spk2-c", "", False)]
  assert data.unlabelled == ["spk1-b", "spk2-c"] and not data.report.skipped
  os.remove(os.path.join(d, "text"))
  assert kaldi.read_kaldi_dir(d, require_text=False).unlabelled == ["spk1-a", "spk1-b", "spk2-c"]
  with pytest.raises(kaldi.KaldiError, match=r"missing \['text'\]"):
    kaldi.read_kaldi_dir(d)


@pytest.mark.parametrize("entry, kind", [
    ("sox wav/a.wav -t wav - |", "command pipe"),
    ("ark:/data/feats.ark:1234", "extended filename"),
    ("/data/wav.ark:1234", "extended filename"),
    ("wav/a.wav[0:1600]", "extended filename"),
    ("-", "extended filename"),
])
def test_pipes_and_extended_filenames_are_refused_by_file_line_and_id(corpus, entry, kind):
  _, d = corpus
  _write(d, "wav.scp", ["spk1-a wav/a.wav", f"spk1-b {entry}", "spk2-c wav/b.wav"])
  with pytest.raises(kaldi.KaldiError) as e:
    kaldi.read_kaldi_dir(d)
  msg = str(e.value)
  assert msg.startswith(f"{d}/wav.scp:2: id 'spk1-b': ") and kind in msg, msg


def test_relative_paths_resolve_against_the_parent_or_root(tmp_path):
  recipe = tmp_path / "s5"
  a = _wav(str(recipe / "waves" / "x.wav"), 0.25)
  d = str(recipe / "data" / "train")  # Kaldi recipe layout: paths relative to s5/
  _write(d, "wav.scp", ["x waves/x.wav"])
  _write(d, "text", ["x NO"])
  _write(d, "utt2spk", ["x x"])
  # Default root is the data dir's parent (s5/data): nothing found, and the error says where.
  with pytest.raises(kaldi.KaldiError, match=rf"missing_audio.*resolve against {recipe}/data;"):
    kaldi.read_kaldi_dir(d)
  assert [u.path for u in kaldi.read_kaldi_dir(d, root=str(recipe)).utterances] == [a]
  # A data dir whose audio sits beside it resolves with the default.
  _wav(str(recipe / "data" / "waves" / "x.wav"), 0.25)
  assert [u.path for u in kaldi.read_kaldi_dir(d).utterances] == [
      str(recipe / "data" / "waves" / "x.wav")]


@pytest.mark.parametrize("name, lines, match", [
    ("utt2spk", ["spk1-a spk1", "spk1-b spk1 extra", "spk2-c spk2"],
     r"utt2spk:2: expected '<utterance-id> <speaker-id>', got 3 field\(s\) for id 'spk1-b'"),
    ("utt2spk", ["spk1-a spk1", "spk1-b"], r"utt2spk:2: .*got 1 field\(s\) for id 'spk1-b'"),
    ("wav.scp", ["spk1-a wav/a.wav", "spk1-b"], r"wav.scp:2: expected '<id> <audio path>'"),
    ("wav.scp", ["spk1-a wav/a.wav", "spk1-a wav/b.wav"],
     r"wav.scp:2: duplicate id 'spk1-a' \(first on line 1\)"),
    ("text", ["spk1-a HI", " spk1-b HO"], r"text:2: line starts with whitespace"),
    ("spk2gender", ["spk1 f", "spk2 male"], r"spk2gender:2: speaker 'spk2': gender 'male'"),
    ("segments", ["s1 spk1-a 0.0 0.2", "s2 spk1-a 0.1"],
     r"segments:2: expected '<utterance-id> <recording-id> <start> <end>', got 3"),
    ("segments", ["s1 spk1-a 0.0 0.2", "s2 spk1-a zero 0.3"],
     r"segments:2: utterance 's2': start time 'zero' is not a number"),
    ("segments", ["s1 spk1-a 0.3 0.2"], r"segments:1: utterance 's1': end 0.2 <= start 0.3"),
    ("segments", ["s1 spk1-a -0.1 0.2"], r"segments:1: utterance 's1': negative start"),
])
def test_bad_lines_are_errors_naming_file_and_line(corpus, name, lines, match):
  _, d = corpus
  _write(d, name, lines)
  with pytest.raises(kaldi.KaldiError, match=match):
    kaldi.read_kaldi_dir(d)


@pytest.mark.parametrize("subtype, ext", [("PCM_16", ".flac"), ("PCM_24", ".flac"),
                                          ("FLOAT", ".wav")])
def test_segments_are_cut_losslessly(tmp_path, subtype, ext):
  rec = _wav(str(tmp_path / "audio" / "meeting.wav"), 2.0, subtype=subtype, seed=7)
  d = str(tmp_path / "data")
  _write(d, "wav.scp", ["meeting audio/meeting.wav"])
  _write(d, "segments", ["m-000 meeting 0.00 0.50", "m-001 meeting 0.5 1.25",
                         "m-002 meeting 1.75 -1", "m-003 meeting 1.5 2.3",  # overshoot 0.3 s
                         "m-004 meeting 1.9 2.6", "m-005 ghost 0 1"])
  _write(d, "text", [f"m-00{i} WORDS {i}" for i in range(6)])
  _write(d, "utt2spk", [f"m-00{i} spk" for i in range(6)])
  data = kaldi.read_kaldi_dir(d)
  assert [(u.id, u.start, u.end) for u in data.utterances] == [
      ("m-000", 0.0, 0.5), ("m-001", 0.5, 1.25), ("m-002", 1.75, 2.0), ("m-003", 1.5, 2.0)]
  assert {s["id"]: s["reason"] for s in data.report.skipped} == {
      "m-004": "segment_out_of_range", "m-005": "unknown_recording"}
  with pytest.raises(ValueError, match="give audio_dir"):
    kaldi.to_utterances(data)
  out = str(tmp_path / "cut")
  utts = kaldi.to_utterances(data, out)
  dtype = {"PCM_16": "int16", "PCM_24": "int32", "FLOAT": "float32"}[subtype]
  full, _ = sf.read(rec, dtype=dtype)
  bounds = {"m-000": (0, 8000), "m-001": (8000, 20000), "m-002": (28000, 32000),
            "m-003": (24000, 32000)}
  for u in utts:
    assert u.path == os.path.join(out, u.id + ext)
    info = sf.info(u.path)
    assert info.samplerate == SR and info.channels == 1
    cut, _ = sf.read(u.path, dtype=dtype)
    lo, hi = bounds[u.id]
    np.testing.assert_array_equal(cut, full[lo:hi])  # bit-exact: tolerance 0
    assert u.duration == (hi - lo) / SR and u.text == f"WORDS {u.id[-1]}"
  # A second run reuses the cut files.
  mtimes = [os.path.getmtime(u.path) for u in utts]
  assert [u.path for u in kaldi.to_utterances(data, out)] == [u.path for u in utts]
  assert [os.path.getmtime(u.path) for u in utts] == mtimes


def test_config_source_and_make_manifest(corpus):
  tmp_path, d = corpus
  _write(d, "text", ["spk1-a HELLO WORLD", "spk2-c YES"])  # spk1-b: no transcript
  c = base.get_config()
  c.data.corpus_dir = str(tmp_path / "built")
  c.data.sources = {"train": sources.source("kaldi_dir", paths=(d,))}
  c.data.train = str(tmp_path / "built" / "train.jsonl")
  built = sources.build_manifests(c, progress=False)
  assert [u.id for u in built["train"]] == ["spk1-a", "spk2-c"]
  assert read_manifest(c.data.train) == built["train"]
  with open(tmp_path / "built" / "train.skipped.json") as f:
    listed = json.load(f)
  assert listed["skipped_by_reason"] == {"no_transcript": 1}
  assert [s["id"] for s in listed["skipped"]] == ["spk1-b"]
  # Caps keep the first utterances (before any segment would be cut), over several dirs.
  capped, _ = sources.read_source(sources.source("kaldi_dir", paths=(d, d), max_utterances=3),
                                  c.data.corpus_dir)
  assert [u.id for u in capped] == ["spk1-a", "spk2-c", "spk1-a"]
  capped, _ = sources.read_source(sources.source("kaldi_dir", paths=(d, d), max_hours=0.1 / 3600),
                                  c.data.corpus_dir)
  assert [u.id for u in capped] == ["spk1-a"]

  # make_manifest --kaldi, with a --list TSV of four columns (the fourth ignored) in one run.
  (tmp_path / "list.tsv").write_text("corpus/wav/b.wav\tGOOD MORNING\tspk1\t0.75\n")
  out = str(tmp_path / "m" / "kaldi.jsonl")
  proc = subprocess.run([sys.executable, "-m", "launch.make_manifest", f"--out={out}",
                         f"--kaldi={d}", f"--list={tmp_path / 'list.tsv'}"], cwd=ROOT,
                        capture_output=True, text=True, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "3 utterances" in proc.stdout and "1 skipped {'no_transcript': 1}" in proc.stdout
  assert "columns 4+ are ignored" in proc.stderr
  assert [(u.id, u.engine) for u in read_manifest(out)] == [
      ("b", "list"), ("spk1-a", "kaldi"), ("spk2-c", "kaldi")]
  assert os.path.exists(str(tmp_path / "m" / "kaldi.skipped.json"))
