"""LibriSpeech and FLEURS through Hugging Face `datasets`, materialized as a local corpus.

  utts, report = hf.load_librispeech("openslr/librispeech_asr", "clean", "train.100",
                                     out_dir="corpora/librispeech")
  utts, report = hf.load_fleurs("google/fleurs", "de_de", "train", out_dir="corpora/fleurs")

`source` is a hub id (needs network, or the `datasets` cache), or a local path: a folder written
by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`, or a local copy of the hub repository
(its parquet files and README; e.g. `huggingface-cli download --repo-type dataset
openslr/librispeech_asr --local-dir DIR`), which `datasets.load_dataset` reads like the hub,
configs and splits included. `streaming=True` iterates without preparing the Arrow cache (with
`max_hours` / `max_utterances`, only that much is read).

How the audio reaches the input pipeline: each row's audio column is cast to
`Audio(decode=False)`, so `datasets` hands over the encoded bytes (recent `datasets` versions
decode through torchcodec/FFmpeg, which a JAX user should not need); they are decoded here with
soundfile, resampled to 16 kHz with soxr (`audio.io.decode_audio_bytes`), and written once as
16-bit FLAC plus a JSONL manifest (`data.local.write_audio_corpus`). Materializing, rather
than teaching the pipeline to read bytes, keeps one input path for every corpus (the pipeline,
teacher cache and evaluation read manifests), makes the data position of a checkpoint refer to
stable files, lets the pipeline decode per batch from disk for corpora larger than memory, and
makes a second run (or one resumed after an interruption) skip the work already done. The cost
is disk: FLAC at 16 kHz is about 60% of 16-bit PCM, ~65 GB for LibriSpeech 960 h.

Errors: a missing required column names it and the columns present; an unknown config or
split names the valid ones; a hub id that cannot be reached says to download the dataset and
pass its local path (never hangs: `datasets`' own retries, or HF_HUB_OFFLINE=1 to fail at
once). Undecodable audio is a counted skip (`<out>/<name>.skipped.json`); transcripts that
normalize to nothing are counted by the input pipeline (`empty_transcript`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterable, Iterator

from distill_jax.audio import io as audio_io
from distill_jax.data import local, pipeline
from distill_jax.data.manifest import Utterance

LIBRISPEECH_ID = "openslr/librispeech_asr"
FLEURS_ID = "google/fleurs"

# openslr/librispeech_asr: configs and their splits as published.
LIBRISPEECH_SPLITS = {
    "clean": ("train.100", "train.360", "validation", "test"),
    "other": ("train.500", "validation", "test"),
    "all": ("train.clean.100", "train.clean.360", "train.other.500", "validation.clean",
            "validation.other", "test.clean", "test.other"),
}
FLEURS_SPLITS = ("train", "validation", "test")


class HfDataError(ValueError):
  """A dataset that cannot be used as asked; the message names the source and the field."""


class HubUnavailableError(HfDataError):
  """A hub id was given but the hub cannot be reached (and the dataset is not cached)."""


@dataclasses.dataclass(frozen=True)
class Schema:
  """Columns of a published dataset and how a row becomes an utterance."""
  name: str
  hub_id: str
  columns: tuple[str, ...]  # all published columns (the required ones are checked)
  required: tuple[str, ...]
  text_column: str


LIBRISPEECH = Schema(
    "librispeech", LIBRISPEECH_ID,
    ("file", "audio", "text", "speaker_id", "chapter_id", "id"),
    ("audio", "text", "speaker_id", "id"), "text")
FLEURS = Schema(
    "fleurs", FLEURS_ID,
    ("id", "num_samples", "path", "audio", "transcription", "raw_transcription", "gender",
     "lang_id", "language", "lang_group_id"),
    ("id", "path", "audio", "transcription", "gender"), "transcription")


def _datasets():
  try:
    import datasets  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("Hugging Face loaders need the optional data extra: "
                      "pip install -r requirements-data.txt") from e
  return datasets


def _check_names(schema: Schema, config: str, split: str) -> None:
  """Config/split names of the two public datasets, checked before touching the hub."""
  if schema is LIBRISPEECH:
    if config not in LIBRISPEECH_SPLITS:
      raise HfDataError(f"{schema.hub_id}: unknown config {config!r}; configs: "
                        f"{sorted(LIBRISPEECH_SPLITS)}")
    if split not in LIBRISPEECH_SPLITS[config]:
      raise HfDataError(f"{schema.hub_id}: unknown split {split!r} of config {config!r}; "
                        f"splits: {list(LIBRISPEECH_SPLITS[config])}")
  else:
    if not (config == "all" or (config.count("_") >= 1 and config.replace("_", "").isalnum()
                                and config == config.lower())):
      raise HfDataError(f"{schema.hub_id}: unknown config {config!r}; FLEURS configs are "
                        f"language codes such as en_us, de_de, es_419, fr_fr, pt_br, hi_in, "
                        f"or 'all'")
    if split not in FLEURS_SPLITS:
      raise HfDataError(f"{schema.hub_id}: unknown split {split!r}; splits: "
                        f"{list(FLEURS_SPLITS)}")


def _offline_message(source: str, err: Exception) -> str:
  return (f"cannot load {source!r} from the Hugging Face Hub ({type(err).__name__}: {err}). "
          f"No network here? Download it where there is one, e.g. `huggingface-cli download "
          f"--repo-type dataset {source} --local-dir DIR` (or `datasets.load_dataset(...)"
          f".save_to_disk(DIR)`), and pass DIR as the source")


def open_split(source: str, config: str, split: str, *, schema: Schema,
               streaming: bool = False, cache_dir: str | None = None,
               num_proc: int | None = None):
  """The `datasets` split of `source` with its audio column cast to `Audio(decode=False)`.

  Raises:
    HfDataError: unknown config/split, missing required column.
    HubUnavailableError: a hub id that cannot be reached.
  """
  datasets = _datasets()
  where = f"{source} [{config}/{split}]"
  if os.path.isdir(source) and (os.path.exists(os.path.join(source, "dataset_dict.json")) or
                                os.path.exists(os.path.join(source, "state.json"))):
    loaded = datasets.load_from_disk(source)
    if isinstance(loaded, datasets.DatasetDict):
      if split not in loaded:
        raise HfDataError(f"{source}: unknown split {split!r}; splits saved there: "
                          f"{list(loaded)}")
      ds = loaded[split]
    else:
      ds = loaded
      if ds.split is not None and str(ds.split) != split:
        raise HfDataError(f"{source}: holds split {str(ds.split)!r}, not {split!r}")
    if streaming:
      ds = ds.to_iterable_dataset()
  else:
    if not os.path.exists(source):
      _check_names(schema, config, split)
    kwargs = dict(cache_dir=cache_dir, streaming=streaming)
    if num_proc and not streaming:
      kwargs["num_proc"] = num_proc
    try:
      ds = datasets.load_dataset(source, config, split=split, **kwargs)
    except ConnectionError as e:
      raise HubUnavailableError(_offline_message(source, e)) from e
    except ValueError as e:  # unknown config ("BuilderConfig ... not found") or split
      msg = str(e)
      if "BuilderConfig" in msg or "config" in msg.lower():
        raise HfDataError(f"{where}: unknown config {config!r}: {msg}") from e
      if "split" in msg.lower():
        raise HfDataError(f"{where}: unknown split {split!r}: {msg}") from e
      raise
    except Exception as e:  # huggingface_hub errors that are not ConnectionErrors
      if type(e).__name__ in ("OfflineModeIsEnabled", "LocalEntryNotFoundError",
                              "DatasetNotFoundError", "RepositoryNotFoundError"):
        raise HubUnavailableError(_offline_message(source, e)) from e
      raise
  columns = list(ds.features) if ds.features is not None else list(ds.column_names or [])
  missing = [c for c in schema.required if c not in columns]
  if missing:
    raise HfDataError(f"{where}: missing required column(s) {missing} of the {schema.name} "
                      f"schema; columns present: {columns}")
  return ds.cast_column("audio", datasets.Audio(decode=False))


def _decoder(audio: dict, name: str):
  """decode() for a row's undecoded audio {"bytes", "path"}: bytes, else a local file."""
  def decode():
    if not isinstance(audio, dict):
      raise audio_io.AudioError(f"{name}: audio column holds {type(audio).__name__}, "
                                f"expected {{'bytes', 'path'}}")
    if audio.get("bytes"):
      return audio_io.decode_audio_bytes(audio["bytes"], name)
    if audio.get("path") and os.path.isfile(audio["path"]):
      return audio_io.load_audio(audio["path"])
    raise audio_io.AudioError(f"{name}: row has no audio bytes and no readable file "
                              f"(path={audio.get('path')!r})")
  return decode


def _records(rows: Iterable[dict], schema: Schema, source: str, config: str,
             text_column: str) -> Iterator[local.AudioRecord]:
  for row in rows:
    if schema is LIBRISPEECH:
      uid, speaker = str(row["id"]), str(row["speaker_id"])
    else:  # FLEURS' id is the sentence id, shared by its speakers: the audio file names it
      stem = os.path.splitext(os.path.basename(str(row["path"])))[0]
      prefix = config if config != "all" else f"lang{row.get('lang_id', '')}"
      uid, speaker = f"{prefix}_{stem}", ""  # FLEURS publishes no speaker id
    name = f"{source} [{config}] {uid}"
    yield local.AudioRecord(uid, str(row[text_column]), speaker, schema.name, name,
                            _decoder(row["audio"], name))


def load(schema: Schema, source: str, config: str, split: str, *, out_dir: str,
         name: str | None = None, streaming: bool = False, cache_dir: str | None = None,
         num_proc: int | None = None, max_hours: float = 0.0, max_utterances: int = 0,
         text_column: str | None = None, num_threads: int = 4,
         progress: bool = True) -> tuple[list[Utterance], pipeline.DataReport]:
  """Materializes one split as FLAC + `<out_dir>/<name>.jsonl`; returns (utterances, report).

  Args:
    schema: `LIBRISPEECH` or `FLEURS`.
    source: hub id or local path (see the module docstring).
    config, split: e.g. ("clean", "train.100"), ("all", "test.other"), ("de_de", "train").
    out_dir: corpus folder; `name` (default `<config>_<split>`) names manifest and audio dir.
    streaming, cache_dir, num_proc: passed to `datasets.load_dataset` (num_proc when not
      streaming).
    max_hours, max_utterances: stop after this much (0 = all), for quick runs.
    text_column: default `text` (LibriSpeech) / `transcription` (FLEURS; or
      `raw_transcription`).
  """
  text_column = text_column or schema.text_column
  if text_column not in schema.columns:
    raise HfDataError(f"text_column {text_column!r} is not a {schema.name} column; columns: "
                      f"{list(schema.columns)}")
  ds = open_split(source, config, split, schema=schema, streaming=streaming,
                  cache_dir=cache_dir, num_proc=num_proc)
  columns = list(ds.features) if ds.features is not None else []
  if columns and text_column not in columns:
    raise HfDataError(f"{source} [{config}/{split}]: missing text column {text_column!r}; "
                      f"columns present: {columns}")
  name = name or f"{config}_{split}"
  return local.write_audio_corpus(
      _records(ds, schema, source, config, text_column), out_dir, name,
      max_hours=max_hours, max_utterances=max_utterances, num_threads=num_threads,
      progress=progress)


def load_librispeech(source: str = LIBRISPEECH_ID, config: str = "clean",
                     split: str = "train.100", **kwargs):
  """`load(LIBRISPEECH, ...)`: configs clean / other / all (`LIBRISPEECH_SPLITS`)."""
  return load(LIBRISPEECH, source, config, split, **kwargs)


def load_fleurs(source: str = FLEURS_ID, config: str = "en_us", split: str = "train",
                **kwargs):
  """`load(FLEURS, ...)`: configs are language codes (en_us, de_de, hi_in, ...)."""
  return load(FLEURS, source, config, split, **kwargs)
