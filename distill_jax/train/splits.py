"""The data a run trains and evaluates on: its tokenizer and its bucketed splits.

`load_split(config, manifest, name, tokenizer)` reads a manifest into a bucketed `AsrDataset`
with the run's bucket spec (batch sizes a multiple of devices x micro-batches); what was skipped
and why is in the returned `DataReport` and, for training runs, `workdir/data_report.json`.
"""

from __future__ import annotations

import functools
import json
import os

import jax
import ml_collections

from distill_jax import text as text_lib
from distill_jax.data import manifest as manifest_lib
from distill_jax.data import pipeline
from distill_jax.models import build


def load_tokenizer(config: ml_collections.ConfigDict) -> text_lib.CharTokenizer:
  return (text_lib.CharTokenizer.from_file(config.tokenizer.vocab) if config.tokenizer.vocab
          else text_lib.CharTokenizer())


def batch_multiple(config: ml_collections.ConfigDict) -> int:
  """Batch sizes are multiples of this: devices x gradient-accumulation micro-batches."""
  return jax.device_count() * config.train.grad_accum_steps


def bucket_spec(config: ml_collections.ConfigDict) -> pipeline.BucketSpec:
  return pipeline.BucketSpec(boundaries=tuple(config.data.buckets),
                             batch_seconds=config.data.batch_seconds,
                             shards=batch_multiple(config))


def load_split(config: ml_collections.ConfigDict, manifest_path: str, name: str,
               tokenizer: text_lib.CharTokenizer, max_utterances: int = 0,
               progress: bool = True, output_frames=None, evaluation: bool = False
               ) -> tuple[pipeline.AsrDataset, pipeline.DataReport]:
  """A manifest as a bucketed dataset; `output_frames(num_samples)` (default: the configured
  model's) decides which transcripts are too long for the model's frames.

  With `evaluation`, no utterance is dropped for its length: a longer one than the longest
  bucket gets a bucket of its own, and transcripts longer than the model's frames are kept
  (they are scored, not trained on). Other skips (unreadable audio, ...) are in the report.
  """
  utts = manifest_lib.read_manifest(manifest_path)
  if max_utterances:
    utts = utts[:max_utterances]
  d = config.data
  return pipeline.prepare_dataset(
      utts, tokenizer, bucket_spec(config), name=name,
      min_output_frames=None if evaluation else (
          output_frames or functools.partial(build.output_frames, config.model)),
      progress=progress, min_seconds=d.min_seconds,
      max_seconds=0.0 if evaluation else d.max_seconds,
      long_utterances="bucket" if evaluation else "skip",
      audio_in_memory={"auto": None, "yes": True, "no": False}[d.audio_in_memory],
      text_options=dict(language=d.language))


def write_data_report(workdir: str, reports: dict) -> None:
  """workdir/data_report.json: per split, what was kept and every skipped utterance with its
  reason, from preparation and (`skipped_at_batch_time`) from per-batch decoding.

  Args:
    reports: {split name: (pipeline.DataReport, pipeline.AsrDataset)}.
  """
  out = {name: rep.to_dict() | {"skipped_at_batch_time": list(ds.runtime_skips)}
         for name, (rep, ds) in reports.items()}
  tmp = os.path.join(workdir, "data_report.json.tmp")
  with open(tmp, "w") as f:
    json.dump(out, f, indent=1)
  os.replace(tmp, os.path.join(workdir, "data_report.json"))
