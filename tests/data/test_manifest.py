import json
import os

import pytest

from distill_jax.data import manifest


def test_roundtrip_with_relative_paths(tmp_path):
  audio = tmp_path / "audio" / "a.flac"
  audio.parent.mkdir()
  audio.write_bytes(b"")
  utts = [manifest.Utterance("a", str(audio), "HELLO", "spk", "flite", 1.5)]
  path = str(tmp_path / "train.jsonl")
  manifest.write_manifest(path, utts)
  row = json.loads(open(path).readline())
  assert row["path"] == os.path.join("audio", "a.flac")
  assert manifest.read_manifest(path) == utts


def test_paths_outside_the_manifest_folder_are_stored_absolute(tmp_path, monkeypatch):
  (tmp_path / "audio").mkdir()
  (tmp_path / "audio" / "x.wav").write_bytes(b"")
  monkeypatch.chdir(tmp_path)
  path = str(tmp_path / "manifests" / "m.jsonl")
  manifest.write_manifest(path, [manifest.Utterance("x", "audio/x.wav", "A")])
  assert json.loads(open(path).readline())["path"] == str(tmp_path / "audio" / "x.wav")
  assert manifest.read_manifest(path)[0].path == str(tmp_path / "audio" / "x.wav")


@pytest.mark.parametrize("line,match", [
    ('{"id": "x", "text": "A"}', r"missing field\(s\) \['path'\]"),
    ("{not json", "not valid JSON"),
])
def test_bad_lines_name_file_and_line(tmp_path, line, match):
  path = tmp_path / "m.jsonl"
  path.write_text('{"id": "ok", "path": "a.wav", "text": "A"}\n' + line + "\n")
  with pytest.raises(manifest.ManifestError, match=match) as e:
    manifest.read_manifest(str(path))
  assert f"{path}:2" in str(e.value)


def test_duplicate_ids_and_missing_manifest(tmp_path):
  path = tmp_path / "m.jsonl"
  path.write_text('{"id": "a", "path": "a.wav", "text": "A"}\n' * 2)
  with pytest.raises(manifest.ManifestError, match="duplicate utterance id 'a'"):
    manifest.read_manifest(str(path))
  with pytest.raises(manifest.ManifestError, match="not found"):
    manifest.read_manifest(str(tmp_path / "nope.jsonl"))


def test_hold_out_speakers_takes_whole_speakers_whatever_the_order():
  utts = [manifest.Utterance(id=f"{s}_{i}", path=f"/a/{s}_{i}.wav", text="A", speaker=s)
          for s in ("s1", "s2", "s3", "s4") for i in range(3)]
  held, rest = manifest.hold_out_speakers(utts, 1, seed=0)
  held2, rest2 = manifest.hold_out_speakers(utts[::-1], 1, seed=0)
  assert len(held) == 3 and len({u.speaker for u in held}) == 1
  assert {u.speaker for u in held} == {u.speaker for u in held2}
  assert not {u.speaker for u in held} & {u.speaker for u in rest}
  assert len(rest) == len(rest2) == 9
  with pytest.raises(manifest.ManifestError, match="4 of 4 speakers"):
    manifest.hold_out_speakers(utts, 4, seed=0)
  with pytest.raises(manifest.ManifestError, match="no speaker .*'x'"):
    manifest.hold_out_speakers(utts + [manifest.Utterance("x", "/a/x.wav", "A")], 1, seed=0)
