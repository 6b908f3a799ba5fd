"""Generic TSV / JSONL lists with named columns (distill_jax/data/lists.py)."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
import soundfile as sf

from distill_jax.data import lists
from distill_jax.data.manifest import ManifestError


def _wav(path, seconds, sr=16000):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  sf.write(path, np.zeros(int(seconds * sr)) + 0.1, sr)
  return path


def test_positional_columns_and_extra_columns_ignored_with_a_note(tmp_path, caplog):
  a = _wav(str(tmp_path / "clips" / "a.wav"), 0.5)
  _wav(str(tmp_path / "other" / "a.wav"), 0.25)
  (tmp_path / "list.tsv").write_text(
      "clips/a.wav\tHELLO\tspk\t0.5\tf\n"
      "other/a.wav\tWORLD\n"
      f"{tmp_path / 'clips' / 'a.wav'}\tAGAIN\tspk2\tx\n")
  with caplog.at_level(logging.INFO, logger=lists.__name__):
    with pytest.raises(ManifestError, match=r"list.tsv:3: duplicate utterance id 'clips_a' "
                       r"\(first on line 1\)"):
      lists.read_list(str(tmp_path / "list.tsv"))
  (tmp_path / "list.tsv").write_text(
      "clips/a.wav\tHELLO\tspk\t0.5\tf\n"
      "other/a.wav\tWORLD\n")
  with caplog.at_level(logging.INFO, logger=lists.__name__):
    utts = lists.read_list(str(tmp_path / "list.tsv"))
  # Repeated stems get their folder in the id, as local.read_list does.
  assert [(u.id, u.path, u.text, u.speaker, u.engine) for u in utts] == [
      ("clips_a", a, "HELLO", "spk", "list"),
      ("other_a", str(tmp_path / "other" / "a.wav"), "WORLD", "", "list")]
  assert [u.duration for u in utts] == [0.5, 0.25]
  assert "1 line(s) have more than 3 columns (first: line 1, 5 columns)" in caplog.text


def test_header_names_the_columns(tmp_path, caplog):
  _wav(str(tmp_path / "x.wav"), 0.5)
  (tmp_path / "list.tsv").write_text("id\tduration\ttext\tpath\tspeaker\n"
                                     "utt1\t0.5\tHI THERE\tx.wav\tbob\n")
  with caplog.at_level(logging.INFO, logger=lists.__name__):
    utts = lists.read_list(str(tmp_path / "list.tsv"))
  assert [(u.id, u.text, u.speaker) for u in utts] == [("utt1", "HI THERE", "bob")]
  assert "column(s) ['duration'] of the header are not used" in caplog.text
  (tmp_path / "short.tsv").write_text("path\ttext\tspeaker\nx.wav\tHI\n")
  with pytest.raises(ManifestError, match=r"short.tsv:2: 2 column\(s\), the header names 3"):
    lists.read_list(str(tmp_path / "short.tsv"))
  (tmp_path / "dup.tsv").write_text("path\ttext\ttext\nx.wav\tHI\tHO\n")
  with pytest.raises(ManifestError, match=r"dup.tsv:1: header .*\(repeated: \['text'\]\)"):
    lists.read_list(str(tmp_path / "dup.tsv"))


def test_errors_name_file_and_line_and_jsonl_goes_to_local(tmp_path):
  _wav(str(tmp_path / "x.wav"), 0.5)
  (tmp_path / "one.tsv").write_text("x.wav\tHI\nx.wav\n")
  with pytest.raises(ManifestError, match=r"one.tsv:2: expected 'path<TAB>text\[<TAB>speaker\]'"):
    lists.read_list(str(tmp_path / "one.tsv"))
  (tmp_path / "gone.tsv").write_text("x.wav\tHI\nnope.wav\tHO\n")
  with pytest.raises(ManifestError, match=r"gone.tsv:2: no audio file .*nope.wav"):
    lists.read_list(str(tmp_path / "gone.tsv"))
  (tmp_path / "l.jsonl").write_text(json.dumps({"path": "x.wav", "text": "HI", "dur": 1}) + "\n")
  assert [(u.id, u.text) for u in lists.read_list(str(tmp_path / "l.jsonl"))] == [("x", "HI")]
