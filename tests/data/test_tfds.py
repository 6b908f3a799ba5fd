"""TFDS LibriSpeech through `tfds.load` on `tfds.testing.mock_data` (the builder's own
feature spec: int16 speech at 16 kHz, text, speaker_id, chapter_id, id)."""

import numpy as np
import pytest
import soundfile as sf

tfds_lib = pytest.importorskip("tensorflow_datasets")

from distill_jax.data import tfds  # noqa: E402
from distill_jax.data.manifest import read_manifest  # noqa: E402


def _mock(**kwargs):
  return tfds_lib.testing.mock_data(policy=tfds_lib.testing.MockPolicy.USE_CODE, **kwargs)


def test_librispeech_split_materializes_the_exact_samples(tmp_path):
  with _mock(num_examples=4):
    utts, report = tfds.load_librispeech("test_clean", out_dir=str(tmp_path),
                                         data_dir=str(tmp_path / "tfds"), progress=False)
    ref = list(tfds_lib.as_numpy(tfds_lib.load("librispeech", split="test_clean",
                                               data_dir=str(tmp_path / "tfds"))))
  assert report.kept == 4 and not report.skipped
  assert read_manifest(str(tmp_path / "test_clean.jsonl")) == utts
  for u, ex in zip(utts, ref):
    assert u.id == ex["id"].decode() and u.text == ex["text"].decode()
    assert u.speaker == str(int(ex["speaker_id"]))
    got, rate = sf.read(u.path, dtype="int16")
    assert rate == 16000
    np.testing.assert_array_equal(got, ex["speech"])  # int16 -> 16-bit FLAC is lossless
    assert u.duration == pytest.approx(len(ex["speech"]) / 16000, abs=1e-4)


def test_caps_and_split_expressions(tmp_path):
  with _mock(num_examples=6):
    utts, _ = tfds.load_librispeech("dev_clean+dev_other", out_dir=str(tmp_path),
                                    data_dir=str(tmp_path / "tfds"), max_utterances=5,
                                    progress=False)
  assert len(utts) == 5
  assert (tmp_path / "dev_clean_dev_other.jsonl").exists()


def test_unknown_split_or_config_names_the_valid_ones(tmp_path):
  with _mock(num_examples=2):
    with pytest.raises(tfds.TfdsDataError, match=r"unknown split 'test_clear'.*'test_clean'"):
      tfds.load_librispeech("test_clean+test_clear[:10]", out_dir=str(tmp_path),
                            data_dir=str(tmp_path / "tfds"))
    with pytest.raises(tfds.TfdsDataError, match=r"unknown config 'plain_text'.*'default'"):
      tfds.load_librispeech("test_clean", config="plain_text", out_dir=str(tmp_path))


def test_unprepared_dataset_says_how_to_prepare_it(tmp_path):
  with pytest.raises(tfds.TfdsDataError, match="tfds build librispeech"):
    tfds.load_librispeech("test_clean", out_dir=str(tmp_path), data_dir=str(tmp_path / "none"))
