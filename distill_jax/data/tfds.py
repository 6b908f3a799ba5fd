"""LibriSpeech through TensorFlow Datasets, materialized as a local corpus.

  utts, report = tfds.load_librispeech("test_clean", data_dir="~/tensorflow_datasets",
                                       out_dir="corpora/librispeech_tfds")

An optional extra (`pip install -r requirements-data.txt`: tensorflow-datasets +
tensorflow-cpu). The `librispeech` builder (configs `default`, `lazy_decode`) has splits
train_clean100, train_clean360, train_other500, dev_clean, dev_other, test_clean, test_other
(`+` joins them, `[a:b]` slices, as in `tfds.load`), and features speech (int16 at 16 kHz, or
the encoded FLAC bytes with `lazy_decode`), text, speaker_id, chapter_id, id.

`download=False` by default: nothing is fetched at run time; prepare the dataset once where
there is network (`tfds build librispeech --data_dir=DIR`, or `download=True`). Like the
Hugging Face loaders (data/hf.py, whose docstring gives the reasons), the examples are written
once as 16 kHz FLAC + a JSONL manifest, so the input pipeline reads TFDS data like any corpus.
"""

from __future__ import annotations

import re
from typing import Iterator

import numpy as np

from distill_jax.audio import io as audio_io
from distill_jax.data import local

BUILDER = "librispeech"
SPLITS = ("train_clean100", "train_clean360", "train_other500", "dev_clean", "dev_other",
          "test_clean", "test_other")
CONFIGS = ("default", "lazy_decode")
FEATURES = ("speech", "text", "speaker_id", "chapter_id", "id")
SAMPLE_RATE = 16000


class TfdsDataError(ValueError):
  """A TFDS split that cannot be used as asked; the message names the builder and the field."""


def _tfds():
  try:
    import tensorflow_datasets  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("TFDS loaders need the optional data extra: "
                      "pip install -r requirements-data.txt") from e
  return tensorflow_datasets


def check_split(split: str, known=SPLITS) -> None:
  """Checks every split named in a TFDS split expression ("a+b[:10%]")."""
  for part in split.split("+"):
    base = re.sub(r"\[.*\]$", "", part.strip())
    if base not in known:
      raise TfdsDataError(f"{BUILDER}: unknown split {base!r} in {split!r}; splits: "
                          f"{list(known)}")


def _decoder(speech, name: str):
  def decode():
    if isinstance(speech, (bytes, bytearray)):  # lazy_decode: the FLAC file's bytes
      return audio_io.decode_audio_bytes(speech, name)
    arr = np.asarray(speech)
    if arr.ndim != 1 or arr.size == 0:
      raise audio_io.AudioError(f"{name}: speech has shape {arr.shape}, expected [S] with S > 0")
    return (arr.astype(np.float32) / 32768.0).clip(-1.0, 1.0)
  return decode


def _records(ds, split: str) -> Iterator[local.AudioRecord]:
  for ex in ds:
    missing = [k for k in FEATURES if k not in ex]
    if missing:
      raise TfdsDataError(f"{BUILDER} [{split}]: missing feature(s) {missing}; features "
                          f"present: {sorted(ex)}")
    uid = ex["id"].decode() if isinstance(ex["id"], bytes) else str(ex["id"])
    text = ex["text"].decode() if isinstance(ex["text"], bytes) else str(ex["text"])
    name = f"tfds:{BUILDER} [{split}] {uid}"
    yield local.AudioRecord(uid, text, str(int(ex["speaker_id"])), "librispeech", name,
                            _decoder(ex["speech"], name))


def load_librispeech(split: str = "test_clean", *, out_dir: str, config: str = "default",
                     data_dir: str | None = None, download: bool = False,
                     name: str | None = None, max_hours: float = 0.0,
                     max_utterances: int = 0, num_threads: int = 4, progress: bool = True):
  """Materializes a TFDS LibriSpeech split as FLAC + `<out_dir>/<name>.jsonl`.

  Returns:
    (utterances, pipeline.DataReport of skipped examples).

  Raises:
    TfdsDataError: unknown config or split, or a missing feature.
  """
  if config not in CONFIGS:
    raise TfdsDataError(f"{BUILDER}: unknown config {config!r}; configs: {list(CONFIGS)}")
  tfds = _tfds()
  builder = tfds.builder(f"{BUILDER}/{config}", data_dir=data_dir)
  check_split(split, tuple(builder.info.splits) or SPLITS)
  try:
    ds = tfds.load(f"{BUILDER}/{config}", split=split, data_dir=data_dir, download=download)
  except AssertionError as e:  # tfds: "Dataset librispeech: could not find data in DIR"
    raise TfdsDataError(
        f"{BUILDER}/{config} is not prepared in data_dir={data_dir!r} ({e}). Prepare it where "
        f"there is network (`tfds build {BUILDER} --data_dir=DIR`) and pass data_dir") from e
  return local.write_audio_corpus(
      _records(tfds.as_numpy(ds), split), out_dir,
      name or re.sub(r"[^\w.-]", "_", split), max_hours=max_hours,
      max_utterances=max_utterances, num_threads=num_threads, progress=progress)
