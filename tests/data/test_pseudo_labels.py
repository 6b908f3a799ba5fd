"""Pseudo-labelled manifests (data/pseudo_labels.py): the WER filter, the files, resuming."""

import json
import os

import pytest

from distill_jax.data import manifest as manifest_lib
from distill_jax.data import pseudo_labels as pl


def _utt(uid, ref, tmp_path):
  return manifest_lib.Utterance(uid, str(tmp_path / f"{uid}.flac"), ref, duration=1.0)


def _labels(tmp_path):
  """ref -> hypothesis with known WERs: 0, 1/10 (kept at 0.1: the filter is strict), 2/10,
  1/1, no reference, empty transcript, too long."""
  ten = "one two three four five six seven eight nine ten"
  cases = [("exact", "Hello world.", "HELLO WORLD"),
           ("one_in_ten", ten, ten.upper().replace("FIVE", "FIFE")),
           ("two_in_ten", ten, ten.upper().replace("FIVE", "FIFE").replace("SIX", "SICKS")),
           ("wrong", "Yes", "NO"),
           ("unlabelled", "", "SOMETHING SAID"),
           ("silence", "Hi there", "")]
  out = [pl.make_label(_utt(uid, ref, tmp_path), hyp.lower(), hyp) for uid, ref, hyp in cases]
  out.append(pl.failed_label(_utt("long", "a b", tmp_path), "too_long", "31.00 s > 30.00 s"))
  return out


def test_wer_filter_drops_and_lists_the_right_ids(tmp_path):
  labels = _labels(tmp_path)
  wers = {x.id: x.wer for x in labels}
  assert wers["exact"] == 0.0 and wers["unlabelled"] is None
  assert wers["one_in_ten"] == pytest.approx(0.1) and wers["two_in_ten"] == pytest.approx(0.2)
  assert wers["wrong"] == 1.0
  kept, dropped = pl.filter_labels(labels, max_wer=0.1)
  assert [x.id for x in kept] == ["exact", "one_in_ten", "unlabelled"]
  assert [(d["id"], d["reason"]) for d in dropped] == [
      ("two_in_ten", "wer"), ("wrong", "wer"), ("silence", "empty_transcript"),
      ("long", "too_long")]
  assert dropped[0]["wer"] == pytest.approx(0.2) and dropped[0]["hypothesis"].endswith("TEN")
  # No filter: only the utterances without a usable transcript go.
  kept, dropped = pl.filter_labels(labels, max_wer=None)
  assert {d["id"] for d in dropped} == {"silence", "long"} and len(kept) == 5
  with pytest.raises(ValueError, match="max_wer=-1"):
    pl.filter_labels(labels, max_wer=-1)


def test_outputs_are_a_manifest_and_a_report(tmp_path):
  out = str(tmp_path / "train_whisper.jsonl")
  report = pl.write_outputs(out, _labels(tmp_path), 0.1, {"beam_size": 1})
  assert report["num_input"] == 7 and report["num_kept"] == 3
  assert report["dropped_by_reason"] == {"wer": 2, "empty_transcript": 1, "too_long": 1}
  with open(out + pl.REPORT_SUFFIX) as f:
    assert [d["id"] for d in json.load(f)["dropped"]] == ["two_in_ten", "wrong", "silence",
                                                          "long"]
  utts = manifest_lib.read_manifest(out)  # the project's reader: text is Whisper's
  assert [(u.id, u.text) for u in utts] == [
      ("exact", "HELLO WORLD"), ("one_in_ten", "ONE TWO THREE FOUR FIFE SIX SEVEN EIGHT NINE "
                                                "TEN"), ("unlabelled", "SOMETHING SAID")]
  assert utts[0].path == str(tmp_path / "exact.flac")
  rows = [json.loads(line) for line in open(out)]
  assert rows[0]["reference"] == "Hello world." and rows[0]["whisper_text"] == "hello world"
  assert rows[0]["path"] == "exact.flac"  # relative below the manifest's folder
  assert pl.check_pseudo_labelled(out) == 3
  plain = str(tmp_path / "plain.jsonl")
  manifest_lib.write_manifest(plain, utts)
  with pytest.raises(ValueError, match=r"plain.jsonl:1: utterance 'exact' has label_source=None"):
    pl.check_pseudo_labelled(plain)
  with pytest.raises(ValueError, match="every one of the 1 utterances was dropped"):
    pl.write_outputs(out, _labels(tmp_path)[3:4], 0.1, {})


def test_partial_file_survives_a_kill_and_checks_its_settings(tmp_path):
  path = str(tmp_path / "out.jsonl.partial")
  labels = _labels(tmp_path)
  w = pl.PartialWriter(path, {"beam_size": 1})
  w.write(labels[:2])
  w.write(labels[2:4])
  w.close()
  with open(path, "a") as f:  # killed in the middle of a line
    f.write('{"id": "unlabelled", "pa')
  got = pl.read_partial(path, {"beam_size": 1})
  assert list(got) == ["exact", "one_in_ten", "two_in_ten", "wrong"]
  assert got["one_in_ten"] == labels[1]
  w = pl.PartialWriter(path, {"beam_size": 1})  # resuming: the torn line is cut, then appended
  w.write(labels[4:])
  w.close()
  got = pl.read_partial(path, {"beam_size": 1})
  assert list(got) == [x.id for x in labels] and got["long"].error == "too_long"
  with pytest.raises(ValueError, match=r"made with other settings: beam_size=1 vs 4"):
    pl.read_partial(path, {"beam_size": 4})
  assert pl.read_partial(str(tmp_path / "absent"), {}) == {}
  assert not os.path.exists(str(tmp_path / "absent"))
