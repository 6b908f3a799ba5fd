"""Local corpora: LibriSpeech and FLEURS release layouts, generic lists, config sources."""

import json
import os

import numpy as np
import pytest
import soundfile as sf

from configs import base
from distill_jax.train import splits
from distill_jax import text
from distill_jax.data import local, sources
from distill_jax.data.manifest import ManifestError, read_manifest

SR = 16000


def _wav(path, seconds, sr=SR):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  t = np.arange(int(seconds * sr)) / sr
  sf.write(path, 0.2 * np.sin(2 * np.pi * 300 * t), sr)
  return path


@pytest.fixture
def librispeech_root(tmp_path):
  """LibriSpeech/<subset>/<speaker>/<chapter>/ with .trans.txt and .flac, as released."""
  root = tmp_path / "LibriSpeech"
  lines = {("test-clean", "1089", "134686"): ["HE HOPED THERE WOULD BE STEW", "STUFF IT INTO YOU"],
           ("test-clean", "121", "121726"): ["ALSO A POPULAR CONTRIVANCE"],
           ("dev-clean", "84", "121123"): ["GO DO YOU HEAR"]}
  for (subset, spk, chap), texts in lines.items():
    d = root / subset / spk / chap
    rows = []
    for i, t in enumerate(texts):
      uid = f"{spk}-{chap}-{i:04d}"
      _wav(str(d / f"{uid}.flac"), 0.5 + 0.5 * i)
      rows.append(f"{uid} {t}\n")
    (d / f"{spk}-{chap}.trans.txt").write_text("".join(rows))
  return root


def test_librispeech_dir_subset_and_parent(librispeech_root):
  utts = local.read_librispeech_dir(str(librispeech_root / "test-clean"))
  assert [(u.id, u.speaker, u.text) for u in utts] == [
      ("1089-134686-0000", "1089", "HE HOPED THERE WOULD BE STEW"),
      ("1089-134686-0001", "1089", "STUFF IT INTO YOU"),
      ("121-121726-0000", "121", "ALSO A POPULAR CONTRIVANCE")]
  assert [u.duration for u in utts] == pytest.approx([0.5, 1.0, 0.5])
  assert len(local.read_librispeech_dir(str(librispeech_root))) == 4


def test_librispeech_dir_errors_name_file_and_line(librispeech_root, tmp_path):
  with pytest.raises(ManifestError, match=r"no \*/\*/\*.trans.txt"):
    local.read_librispeech_dir(str(tmp_path / "empty"))
  os.remove(librispeech_root / "dev-clean/84/121123/84-121123-0000.flac")
  with pytest.raises(ManifestError, match=r"84-121123.trans.txt:1: no audio file"):
    local.read_librispeech_dir(str(librispeech_root / "dev-clean"))
  (librispeech_root / "dev-clean/84/121123/84-121123.trans.txt").write_text("GARBAGE\n")
  with pytest.raises(ManifestError, match=r"84-121123.trans.txt:1: expected"):
    local.read_librispeech_dir(str(librispeech_root / "dev-clean"))


def _fleurs_dir(root, lang="de_de"):
  d = root / lang
  rows = [("1234", "111.wav", '"Über" die Straße.', "über die straße", "ü b e r", 16000, "MALE"),
          ("1234", "222.wav", '"Über" die Straße.', "über die straße", "ü b e r", 24000,
           "FEMALE"),
          ("1301", "333.wav", "Öl, bitte!", "öl bitte", "ö l", 8000, "MALE")]
  os.makedirs(d)
  for split, sel in (("train", rows[:2]), ("dev", rows[2:])):
    with open(d / f"{split}.tsv", "w", encoding="utf-8") as f:
      for r in sel:
        f.write("\t".join(map(str, r)) + "\n")
        _wav(str(d / "audio" / split / r[1]), r[5] / SR)
  return d


def test_fleurs_dir_layout(tmp_path):
  d = _fleurs_dir(tmp_path)
  train = local.read_fleurs_dir(str(d), "train")
  assert [(u.id, u.text) for u in train] == [("de_de_111", "über die straße"),
                                             ("de_de_222", "über die straße")]
  assert [u.duration for u in train] == pytest.approx([1.0, 1.5])
  dev = local.read_fleurs_dir(str(d), "validation", text_column="raw_transcription")
  assert [(u.id, u.text) for u in dev] == [("de_de_333", "Öl, bitte!")]
  with pytest.raises(ManifestError, match=r"no test.tsv.*\['dev.tsv', 'train.tsv'\]"):
    local.read_fleurs_dir(str(d), "test")
  with open(d / "train.tsv", "a", encoding="utf-8") as f:
    f.write("1\t444.wav\tonly three\n")
  with pytest.raises(ManifestError, match=r"train.tsv:3: expected 7 tab-separated"):
    local.read_fleurs_dir(str(d), "train")
  (d / "dev.tsv").write_text("1\t999.wav\ta\ta\ta\t1\tMALE\n")
  with pytest.raises(ManifestError, match=r"dev.tsv:1: no audio file '999.wav'"):
    local.read_fleurs_dir(str(d), "validation")


def test_generic_jsonl_and_tsv_lists(tmp_path):
  a = _wav(str(tmp_path / "clips" / "a.wav"), 0.5)
  _wav(str(tmp_path / "clips" / "b.flac"), 0.75, sr=22050)
  (tmp_path / "list.jsonl").write_text(
      json.dumps({"path": "clips/a.wav", "text": "HELLO", "speaker": "s1"}) + "\n" +
      json.dumps({"path": str(tmp_path / "clips/b.flac"), "text": "WORLD", "id": "bee"}) + "\n")
  utts = local.read_list(str(tmp_path / "list.jsonl"))
  assert [(u.id, u.path, u.text, u.speaker) for u in utts] == [
      ("a", a, "HELLO", "s1"), ("bee", str(tmp_path / "clips/b.flac"), "WORLD", "")]
  assert [u.duration for u in utts] == pytest.approx([0.5, 0.75], abs=1e-4)
  (tmp_path / "list.tsv").write_text("path\ttext\tspeaker\nclips/a.wav\tHELLO\tspk\n"
                                     "clips/b.flac\tWORLD\n")
  assert [(u.id, u.speaker) for u in local.read_list(str(tmp_path / "list.tsv"))] == [
      ("a", "spk"), ("b", "")]
  (tmp_path / "bad.tsv").write_text("clips/a.wav\n")
  with pytest.raises(ManifestError, match=r"bad.tsv:1: expected 'path<TAB>text"):
    local.read_list(str(tmp_path / "bad.tsv"))
  (tmp_path / "bad.jsonl").write_text(json.dumps({"path": "clips/a.wav"}) + "\n")
  with pytest.raises(ManifestError, match=r"bad.jsonl:1: missing field\(s\) \['text'\]"):
    local.read_list(str(tmp_path / "bad.jsonl"))
  (tmp_path / "gone.jsonl").write_text(json.dumps({"path": "nope.wav", "text": "X"}) + "\n")
  with pytest.raises(ManifestError, match=r"gone.jsonl:1: no audio file"):
    local.read_list(str(tmp_path / "gone.jsonl"))


def _fleurs_config(tmp_path, folder, teacher=""):
  c = base.get_config()
  c.data.corpus_dir = str(tmp_path / "corpus")
  c.data.language = "de_de"
  c.data.sources = {k: sources.source("fleurs_dir", paths=(str(folder),), splits=(v,))
                    for k, v in (("train", "train"), ("dev", "validation"))}
  c.data.train = str(tmp_path / "corpus/train.jsonl")
  c.data.dev = str(tmp_path / "corpus/dev.jsonl")
  c.tokenizer.vocab = str(tmp_path / "corpus/vocab.json")
  c.distill.teacher = teacher
  return c


def test_config_sources_build_manifests_and_a_language_vocabulary(tmp_path):
  d = _fleurs_dir(tmp_path / "fleurs")
  built = sources.build_manifests(_fleurs_config(tmp_path, d), progress=False)
  assert {k: len(v) for k, v in built.items()} == {"train": 2, "dev": 1}
  assert read_manifest(str(tmp_path / "corpus/train.jsonl")) == built["train"]
  tok = text.CharTokenizer.from_file(str(tmp_path / "corpus/vocab.json"))
  assert set(tok.vocab) - set(text.SPECIAL_TOKENS) - {"|"} == set("ÜBERDIESTRA")
  assert tok.encode("ÜBER DIE STRASSE")


def test_english_teacher_cannot_cover_german_is_a_clear_error(tmp_path):
  d = _fleurs_dir(tmp_path / "fleurs")
  teacher = tmp_path / "teacher"
  text.CharTokenizer().save(str(teacher))
  with pytest.raises(text.TextError, match=r"teacher vocabulary .*vocab.json cannot cover "
                     r"language 'de_de'.*'Ü' \(LATIN CAPITAL LETTER U WITH DIAERESIS\) x2"):
    sources.build_manifests(_fleurs_config(tmp_path, d, str(teacher)), progress=False)


def test_source_entries_reject_unknown_kinds_and_fields():
  with pytest.raises(ValueError, match="unknown source kind 'hf'"):
    sources.source("hf")
  with pytest.raises(ValueError, match=r"unknown field\(s\) \['split'\]"):
    sources.source("hf_fleurs", split="train")


def test_write_audio_corpus_resumes_and_counts_undecodable(tmp_path):
  calls = []

  def rec(i, bad=False):
    def decode():
      calls.append(i)
      if bad:
        raise local.audio_io.AudioError(f"r{i}: cannot decode audio: junk")
      return np.full(SR // 2, 0.25, np.float32)
    return local.AudioRecord(f"r/{i}", "HELLO", "", "test", f"src{i}", decode)

  recs = [rec(0), rec(1, bad=True), rec(2), rec(2)]
  utts, report = local.write_audio_corpus(recs, str(tmp_path), "x", progress=False)
  assert [u.id for u in utts] == ["r/0", "r/2"] and os.path.basename(utts[0].path) == "r_0.flac"
  assert sorted(report.counts().items()) == [("corrupt_audio", 1), ("duplicate_id", 1)]
  calls.clear()
  again, _ = local.write_audio_corpus(recs[:3], str(tmp_path), "x", progress=False)
  assert again == utts and calls == [1]  # only the undecodable one is tried again


def test_training_loop_reads_the_built_manifests_with_the_language_rules(tmp_path):
  from distill_jax.train import loop
  d = _fleurs_dir(tmp_path / "fleurs")
  config = _fleurs_config(tmp_path, d)
  sources.build_manifests(config, progress=False)
  config.data.buckets = (1.0, 2.0)
  config.data.batch_seconds = 4.0
  config.data.audio_in_memory = "no"
  tok = splits.load_tokenizer(config)
  ds, rep = splits.load_split(config, config.data.train, "train", tok, progress=False)
  assert ds.lazy and rep.kept == 2
  assert [ex.text for ex in ds.examples] == ["ÜBER DIE STRASSE"] * 2
  config.data.max_seconds = 1.2
  _, rep = splits.load_split(config, config.data.train, "train", tok, progress=False)
  assert rep.counts() == {"too_long": 1}


@pytest.mark.parametrize("name,arg", [("librispeech_960", None), ("librispeech_960", "tfds"),
                                      ("librispeech_960", "/data/LibriSpeech"),
                                      ("librispeech_100", None), ("librispeech_100", "tfds"),
                                      ("fleurs_asr", "de_de"), ("fleurs_asr", "en_us"),
                                      ("fleurs_asr", "hi_in,/data/fleurs/hi_in")])
def test_real_corpus_configs_name_valid_splits_and_manifests(name, arg):
  import importlib
  from distill_jax.data import hf, tfds
  c = importlib.import_module(f"configs.{name}").get_config(arg)
  assert set(c.data.sources) >= {"train", "dev"} and set(c.eval.splits) <= set(c.data)
  for key, entry in c.data.sources.items():
    assert c.data[key].endswith(".jsonl")
    if entry.kind == "hf_librispeech":
      assert entry.splits and set(entry.splits) <= set(hf.LIBRISPEECH_SPLITS[entry.config])
    elif entry.kind == "hf_fleurs":
      assert entry.splits and set(entry.splits) <= set(hf.FLEURS_SPLITS)
    elif entry.kind == "tfds_librispeech":
      assert entry.splits and set(entry.splits) <= set(tfds.SPLITS)
    else:
      assert entry.paths
  assert (c.tokenizer.vocab == "") == (text.language_code(c.data.language) == "en")
