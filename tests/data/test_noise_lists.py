"""data/noise_lists.py: sources never straddle splits, seeded order, errors name the group/file."""

import os

import pytest

from distill_jax.data import mixing, noise_lists


def _items():
  # 2 categories x 4 sources, source 'c' of dog with two takes.
  rows = []
  for group in ("dog", "rain"):
    for src in "abcd":
      takes = "AB" if (group, src) == ("dog", "c") else "A"
      rows += [(f"/x/{group}-{src}-{t}.wav", group, src) for t in takes]
  return rows


def test_each_group_sends_whole_sources_to_each_split():
  out = noise_lists.split_by_source(_items(), test=1, dev=1, seed=0)
  for group in ("dog", "rain"):
    sources = {split: {p.split("-")[1] for p in paths if f"/{group}-" in p}
               for split, paths in out.items()}
    assert len(sources["test"]) == 1 and len(sources["dev"]) == 1 and len(sources["train"]) == 2
    assert not (sources["test"] & sources["train"]) and not (sources["dev"] & sources["train"])
  assert sorted(sum(out.values(), [])) == sorted(p for p, _, _ in _items())  # nothing lost
  assert out == noise_lists.split_by_source(list(reversed(_items())), test=1, dev=1, seed=0)
  assert any(noise_lists.split_by_source(_items(), 1, 1, seed=s) != out for s in range(1, 6))


def test_a_group_without_a_training_source_is_an_error_naming_it():
  with pytest.raises(ValueError, match="'rain'"):
    noise_lists.split_by_source([("/a.wav", "rain", "1"), ("/b.wav", "rain", "2")], 1, 1)


def test_esc50_rows_need_their_files_and_lists_round_trip(tmp_path):
  audio = tmp_path / "audio"
  audio.mkdir()
  (audio / "1-100-A-0.wav").write_bytes(b"")
  csv = tmp_path / "meta.csv"
  csv.write_text("filename,fold,category,src_file\n1-100-A-0.wav,1,dog,100\n"
                 "1-200-A-0.wav,1,dog,200\n")
  with pytest.raises(FileNotFoundError, match="1-200-A-0.wav"):
    noise_lists.esc50_items(str(csv), str(audio))
  (audio / "1-200-A-0.wav").write_bytes(b"")
  rows = noise_lists.esc50_items(str(csv), str(audio))
  assert [r[1:] for r in rows] == [("dog", "100"), ("dog", "200")]
  out = tmp_path / "lists" / "train.txt"
  noise_lists.write_list([r[0] for r in rows], str(out), "train")
  assert [os.path.basename(p) for p in mixing.read_noise_list(str(out))] == [
      "1-100-A-0.wav", "1-200-A-0.wav"]
