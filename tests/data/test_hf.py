"""Hugging Face loaders on local fixtures with the exact public schemas of
openslr/librispeech_asr and google/fleurs (save_to_disk folders, a hub-like parquet repo)."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

datasets = pytest.importorskip("datasets")

from distill_jax import text  # noqa: E402
from distill_jax.data import hf, pipeline  # noqa: E402
from distill_jax.data.manifest import read_manifest  # noqa: E402

SR = 16000


def _sine(seconds, sr=SR, freq=220.0):
  t = np.arange(int(round(seconds * sr))) / sr
  return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _encode(wav, sr=SR, fmt="FLAC"):
  b = io.BytesIO()
  sf.write(b, wav, sr, format=fmt, subtype="PCM_16")
  return b.getvalue()


LS_FEATURES = datasets.Features({
    "file": datasets.Value("string"), "audio": datasets.Audio(sampling_rate=16000),
    "text": datasets.Value("string"), "speaker_id": datasets.Value("int64"),
    "chapter_id": datasets.Value("int64"), "id": datasets.Value("string")})

FLEURS_LANGS = ["de_de", "en_us", "hi_in"]
FLEURS_FEATURES = datasets.Features({
    "id": datasets.Value("int32"), "num_samples": datasets.Value("int32"),
    "path": datasets.Value("string"), "audio": datasets.Audio(sampling_rate=16000),
    "transcription": datasets.Value("string"), "raw_transcription": datasets.Value("string"),
    "gender": datasets.ClassLabel(names=["male", "female", "other"]),
    "lang_id": datasets.ClassLabel(names=FLEURS_LANGS), "language": datasets.Value("string"),
    "lang_group_id": datasets.ClassLabel(names=["western_european_we", "south_asian_sa"])})


def _dataset(rows, features):
  # Dataset.from_dict(..., features=Audio) would encode through torchcodec; the bytes are
  # already encoded, so build the Arrow columns and cast to the published features.
  return datasets.Dataset.from_dict(rows).cast(features)


def _librispeech_rows(n, seed, speaker=103, chapter=1240, texts=None):
  rng = np.random.default_rng(seed)
  rows = {k: [] for k in LS_FEATURES}
  words = ["CHAPTER", "ONE", "MISSUS", "RACHEL", "LYNDE", "IS", "SURPRISED"]
  for i in range(n):
    uid = f"{speaker}-{chapter}-{i:04d}"
    wav = _sine(float(rng.uniform(0.6, 2.5)), freq=150 + 20 * i)
    rows["file"].append(f"/data/LibriSpeech/{speaker}/{chapter}/{uid}.flac")
    rows["audio"].append({"bytes": _encode(wav), "path": f"{uid}.flac"})
    rows["text"].append(texts[i] if texts else " ".join(rng.choice(words, size=3)))
    rows["speaker_id"].append(speaker)
    rows["chapter_id"].append(chapter)
    rows["id"].append(uid)
  return rows


@pytest.fixture(scope="module")
def librispeech_disk(tmp_path_factory):
  """A DatasetDict of the `clean` config saved with save_to_disk (train.100 and test)."""
  path = str(tmp_path_factory.mktemp("ls") / "librispeech_clean")
  datasets.DatasetDict({
      "train.100": _dataset(_librispeech_rows(6, 0), LS_FEATURES),
      "test": _dataset(_librispeech_rows(3, 1, speaker=1089, chapter=134686), LS_FEATURES),
  }).save_to_disk(path)
  return path


@pytest.fixture(scope="module")
def librispeech_repo(tmp_path_factory):
  """A local copy of the hub repository layout: parquet shards + README configs."""
  root = tmp_path_factory.mktemp("ls_repo")
  for split, seed in (("train.100", 0), ("validation", 2), ("test", 1)):
    os.makedirs(root / "clean" / split)
    _dataset(_librispeech_rows(5, seed), LS_FEATURES).to_parquet(
        str(root / "clean" / split / "0000.parquet"))
  (root / "README.md").write_text(
      "---\nconfigs:\n- config_name: clean\n  data_files:\n" + "".join(
          f"  - split: {s}\n    path: clean/{s}/*.parquet\n"
          for s in ("train.100", "validation", "test")) + "---\n")
  return str(root)


def test_librispeech_from_save_to_disk_writes_exact_audio_and_manifest(librispeech_disk,
                                                                        tmp_path):
  utts, report = hf.load_librispeech(librispeech_disk, "clean", "train.100",
                                     out_dir=str(tmp_path), progress=False)
  assert report.kept == 6 and not report.skipped
  manifest = read_manifest(str(tmp_path / "clean_train.100.jsonl"))
  assert manifest == utts
  src = datasets.load_from_disk(librispeech_disk)["train.100"].cast_column(
      "audio", datasets.Audio(decode=False))
  for u, row in zip(utts, src):
    assert (u.id, u.text, u.speaker, u.engine) == (row["id"], row["text"], "103",
                                                   "librispeech")
    ref, _ = sf.read(io.BytesIO(row["audio"]["bytes"]), dtype="int16")
    got, rate = sf.read(u.path, dtype="int16")
    assert rate == SR
    np.testing.assert_array_equal(got, ref)  # 16-bit FLAC round trip is lossless
    assert u.duration == pytest.approx(len(ref) / SR, abs=1e-4)
  # A second run reuses the written files (resumable, no re-decode).
  mtimes = [os.path.getmtime(u.path) for u in utts]
  again, _ = hf.load_librispeech(librispeech_disk, "clean", "train.100",
                                 out_dir=str(tmp_path), progress=False)
  assert again == utts and [os.path.getmtime(u.path) for u in utts] == mtimes
  # ... and the pipeline reads the manifest like any other.
  ds, rep = pipeline.prepare_dataset(manifest, text.CharTokenizer(),
                                     pipeline.BucketSpec((1.0, 2.0, 3.0), 6.0), progress=False)
  assert rep.kept == 6 and len(ds) == 6


def test_streaming_and_regular_read_the_same_local_repo(librispeech_repo, tmp_path):
  reg, _ = hf.load_librispeech(librispeech_repo, "clean", "test", out_dir=str(tmp_path / "a"),
                               cache_dir=str(tmp_path / "cache"), num_proc=1, progress=False)
  stream, _ = hf.load_librispeech(librispeech_repo, "clean", "test", streaming=True,
                                  out_dir=str(tmp_path / "b"), progress=False)
  assert [u.id for u in reg] == [u.id for u in stream] and len(reg) == 5
  for a, b in zip(reg, stream):
    np.testing.assert_array_equal(sf.read(a.path)[0], sf.read(b.path)[0])
  # Caps stop the stream early.
  capped, _ = hf.load_librispeech(librispeech_repo, "clean", "train.100", streaming=True,
                                  max_utterances=2, out_dir=str(tmp_path / "c"),
                                  progress=False)
  assert len(capped) == 2
  hours, _ = hf.load_librispeech(librispeech_repo, "clean", "train.100", streaming=True,
                                 max_hours=1.0 / 3600, out_dir=str(tmp_path / "d"),
                                 progress=False)
  assert 1 <= len(hours) < 5 and sum(u.duration for u in hours[:-1]) < 1.0


def test_missing_column_names_it_and_the_columns_present(tmp_path):
  rows = _librispeech_rows(2, 0)
  del rows["text"]
  path = str(tmp_path / "no_text")
  feats = datasets.Features({k: v for k, v in LS_FEATURES.items() if k != "text"})
  _dataset(rows, feats).save_to_disk(path)
  with pytest.raises(hf.HfDataError, match=r"missing required column\(s\) \['text'\].*"
                     r"columns present: \['file', 'audio', 'speaker_id'"):
    hf.load_librispeech(path, "clean", "train", out_dir=str(tmp_path / "o"), progress=False)


def test_unknown_config_or_split_names_the_valid_ones(librispeech_disk, librispeech_repo,
                                                      tmp_path):
  out = str(tmp_path)
  with pytest.raises(hf.HfDataError, match=r"unknown config 'clena'.*\['all', 'clean', "
                     "'other'\\]"):
    hf.load_librispeech(hf.LIBRISPEECH_ID, "clena", "test", out_dir=out)
  with pytest.raises(hf.HfDataError, match=r"unknown split 'train.960'.*'train.clean.100'"):
    hf.load_librispeech(hf.LIBRISPEECH_ID, "all", "train.960", out_dir=out)
  with pytest.raises(hf.HfDataError, match="unknown split 'dev'.*validation"):
    hf.load_fleurs(hf.FLEURS_ID, "de_de", "dev", out_dir=out)
  with pytest.raises(hf.HfDataError, match=r"unknown split 'dev'.*\['train.100', 'test'\]"):
    hf.load_librispeech(librispeech_disk, "clean", "dev", out_dir=out)
  with pytest.raises(hf.HfDataError, match="unknown config 'other'"):
    hf.load_librispeech(librispeech_repo, "other", "test", out_dir=out)
  with pytest.raises(hf.HfDataError, match="unknown split 'train.500'"):
    hf.load_librispeech(librispeech_repo, "clean", "train.500", out_dir=out)


def test_undecodable_bytes_and_empty_transcripts_are_counted_skips(tmp_path):
  rows = _librispeech_rows(4, 3, texts=["HELLO WORLD", " ... !", "GOOD DAY", "FINE"])
  rows["audio"][2] = {"bytes": b"RIFF not really a wave file" * 10, "path": "bad.wav"}
  path = str(tmp_path / "bad")
  datasets.DatasetDict({"test": _dataset(rows, LS_FEATURES)}).save_to_disk(path)
  utts, report = hf.load_librispeech(path, "clean", "test", out_dir=str(tmp_path / "o"),
                                     progress=False)
  assert [u.id for u in utts] == [rows["id"][i] for i in (0, 1, 3)]
  assert [(s["id"], s["reason"]) for s in report.skipped] == [(rows["id"][2], "corrupt_audio")]
  assert "cannot decode audio" in report.skipped[0]["detail"]
  saved = json.loads((tmp_path / "o" / "clean_test.skipped.json").read_text())
  assert saved["skipped_by_reason"] == {"corrupt_audio": 1}
  _, rep = pipeline.prepare_dataset(utts, text.CharTokenizer(),
                                    pipeline.BucketSpec((1.0, 2.0, 3.0), 6.0), progress=False)
  assert rep.counts() == {"empty_transcript": 1} and rep.kept == 2


def _fleurs_rows(lang, rates, texts):
  rows = {k: [] for k in FLEURS_FEATURES}
  for i, (rate, (raw, norm)) in enumerate(zip(rates, texts)):
    wav = _sine(1.0 + 0.25 * i, sr=rate, freq=440.0)
    name = f"{1000 + i}834758291.wav"
    rows["id"].append(1234 + i // 2)  # the sentence id: two speakers read each sentence
    rows["num_samples"].append(len(wav))
    rows["path"].append(name)
    rows["audio"].append({"bytes": _encode(wav, rate, "WAV"), "path": name})
    rows["transcription"].append(norm)
    rows["raw_transcription"].append(raw)
    rows["gender"].append(i % 2)
    rows["lang_id"].append(FLEURS_LANGS.index(lang))
    rows["language"].append({"de_de": "German", "hi_in": "Hindi"}[lang])
    rows["lang_group_id"].append(0 if lang == "de_de" else 1)
  return rows


def test_fleurs_resamples_other_rates_and_keeps_its_letters(tmp_path):
  texts = [("Über die Straße.", "über die straße"), ("Über die Straße.", "über die straße"),
           ("Öl ist teuer", "öl ist teuer")]
  path = str(tmp_path / "fleurs_de")
  datasets.DatasetDict({"train": _dataset(_fleurs_rows("de_de", [16000, 48000, 8000], texts),
                                          FLEURS_FEATURES)}).save_to_disk(path)
  utts, report = hf.load_fleurs(path, "de_de", "train", out_dir=str(tmp_path / "o"),
                                progress=False)
  assert not report.skipped
  assert [u.id for u in utts] == ["de_de_1000834758291", "de_de_1001834758291",
                                  "de_de_1002834758291"]  # unique although ids repeat
  assert [u.text for u in utts] == [t[1] for t in texts]
  for i, u in enumerate(utts):
    got, rate = sf.read(u.path, dtype="float32")
    assert rate == SR
    ref = _sine(1.0 + 0.25 * i, freq=440.0)  # the same tone synthesized at 16 kHz
    assert abs(len(got) - len(ref)) <= 1
    mid = slice(400, len(ref) - 400)  # the resampler's edges are not a sine
    np.testing.assert_allclose(got[mid], ref[mid], atol=2e-3)
  tok, _ = text.vocab_from_transcripts([u.text for u in utts], language="de_de")
  ds, rep = pipeline.prepare_dataset(utts, tok, pipeline.BucketSpec((1.5, 2.0), 4.0),
                                     progress=False, text_options=dict(language="de_de"))
  assert rep.kept == 3 and {ex.text for ex in ds.examples} == {"ÜBER DIE STRASSE",
                                                               "ÖL IST TEUER"}


def test_hindi_marks_survive_normalization_and_vocabulary(tmp_path):
  texts = [("हिन्दी भाषा।", "हिन्दी भाषा"), ("नमस्ते दुनिया", "नमस्ते दुनिया")]
  path = str(tmp_path / "fleurs_hi")
  _dataset(_fleurs_rows("hi_in", [16000, 16000], texts), FLEURS_FEATURES).save_to_disk(path)
  utts, _ = hf.load_fleurs(path, "hi_in", "train", out_dir=str(tmp_path / "o"), progress=False,
                           text_column="raw_transcription")
  tok, stats = text.vocab_from_transcripts([u.text for u in utts], language="hi_in")
  assert "\u094d" in tok.vocab and "\u093f" in tok.vocab  # virama, vowel sign i
  assert stats == dict(transcripts=2, skipped=0, characters=len(set("हिन्दीभाषानमस्तेदुनिया")))
  with pytest.raises(text.TextError, match="cannot cover language 'hi_in'.*DEVANAGARI"):
    text.check_coverage(text.CharTokenizer(), [u.text for u in utts],
                        what="teacher vocabulary t/vocab.json", language="hi_in")


def test_hub_id_without_network_says_to_download_and_pass_a_local_path(tmp_path):
  code = ("from distill_jax.data import hf\n"
          "try:\n"
          "  hf.load_librispeech('openslr/librispeech_asr', 'clean', 'test',\n"
          f"                     out_dir={str(tmp_path)!r})\n"
          "except hf.HubUnavailableError as e:\n"
          "  print('CLEAR:', e)\n")
  env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
             HF_HOME=str(tmp_path / "hf_home"), HF_HUB_ETAG_TIMEOUT="2")
  res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, env=env, cwd=os.path.dirname(os.path.dirname(
                           os.path.dirname(os.path.abspath(__file__)))))
  assert "CLEAR:" in res.stdout, res.stderr[-2000:]
  assert "openslr/librispeech_asr" in res.stdout and "pass DIR as the source" in res.stdout
