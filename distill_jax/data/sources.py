"""From a config's `data.sources` entries to the manifests the training loop reads.

Each entry of `config.data.sources` names a `config.data` manifest path and says where its
utterances come from; `build_manifests(config)` (called by `launch/make_manifest.py --config`)
writes every manifest, and for a language other than English the character vocabulary of the
training transcripts (`config.tokenizer.vocab`). Training, evaluation and the teacher cache then
read manifests only, whatever the corpus.

Entry fields (ml_collections dicts; `kind` chooses the reader):
  kind='hf_librispeech' | 'hf_fleurs': source (hub id or local path), config, splits (several
    are concatenated, e.g. LibriSpeech 960 h), streaming, cache_dir, num_proc, max_hours,
    max_utterances, text_column (FLEURS).
  kind='tfds_librispeech': splits, tfds_config, data_dir, max_hours, max_utterances.
  kind='librispeech_dir' | 'transcripts_folder' | 'list': paths (folders or list files).
  kind='fleurs_dir': paths (language folders), splits, text_column.
The materialized audio of the hub/TFDS kinds goes under `config.data.corpus_dir`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import ml_collections

from distill_jax import text as text_lib
from distill_jax.data import local
from distill_jax.data.manifest import Utterance, read_manifest, write_manifest

log = logging.getLogger(__name__)

KINDS = ("hf_librispeech", "hf_fleurs", "tfds_librispeech", "librispeech_dir", "fleurs_dir",
         "transcripts_folder", "list")


def source(kind: str, **fields: Any) -> ml_collections.ConfigDict:
  """A `config.data.sources` entry with every field of its kind (defaults filled in)."""
  if kind not in KINDS:
    raise ValueError(f"unknown source kind {kind!r}; kinds: {list(KINDS)}")
  base = dict(kind=kind, source="", config="", splits=(), paths=(), streaming=False,
              cache_dir="", num_proc=0, max_hours=0.0, max_utterances=0, text_column="",
              tfds_config="default", data_dir="")
  unknown = sorted(set(fields) - set(base))
  if unknown:
    raise ValueError(f"unknown field(s) {unknown} for a {kind} source; fields: {sorted(base)}")
  base.update(fields)
  return ml_collections.ConfigDict(base)


def read_source(entry: ml_collections.ConfigDict, corpus_dir: str, *,
                progress: bool = True) -> tuple[list[Utterance], list]:
  """Utterances of one entry (materializing hub/TFDS audio under `corpus_dir`) + skip reports."""
  kind = entry.kind
  caps = dict(max_hours=entry.max_hours, max_utterances=entry.max_utterances)
  utts, reports = [], []
  if kind in ("hf_librispeech", "hf_fleurs"):
    from distill_jax.data import hf  # pylint: disable=g-import-not-at-top
    schema = hf.LIBRISPEECH if kind == "hf_librispeech" else hf.FLEURS
    for split in entry.splits:
      u, rep = hf.load(schema, entry.source or schema.hub_id, entry.config, split,
                       out_dir=os.path.join(corpus_dir, schema.name),
                       streaming=entry.streaming, cache_dir=entry.cache_dir or None,
                       num_proc=entry.num_proc or None, text_column=entry.text_column or None,
                       progress=progress, **caps)
      utts += u
      reports.append(rep)
  elif kind == "tfds_librispeech":
    from distill_jax.data import tfds  # pylint: disable=g-import-not-at-top
    for split in entry.splits:
      u, rep = tfds.load_librispeech(split, out_dir=os.path.join(corpus_dir, "tfds"),
                                     config=entry.tfds_config, data_dir=entry.data_dir or None,
                                     progress=progress, **caps)
      utts += u
      reports.append(rep)
  elif kind == "librispeech_dir":
    utts = [u for p in entry.paths for u in local.read_librispeech_dir(p)]
  elif kind == "fleurs_dir":
    utts = [u for p in entry.paths for s in entry.splits
            for u in local.read_fleurs_dir(p, s, text_column=entry.text_column or
                                           "transcription")]
  elif kind == "transcripts_folder":
    utts = [u for p in entry.paths for u in local.read_transcripts_folder(p)]
  elif kind == "list":
    utts = [u for p in entry.paths for u in local.read_list(p)]
  else:
    raise ValueError(f"unknown source kind {kind!r}; kinds: {list(KINDS)}")
  if kind in ("librispeech_dir", "fleurs_dir", "transcripts_folder", "list"):
    if entry.max_utterances:
      utts = utts[:entry.max_utterances]
    if entry.max_hours:
      total, keep = 0.0, []
      for u in utts:
        if total >= entry.max_hours * 3600:
          break
        keep.append(u)
        total += u.duration
      utts = keep
  return utts, reports


def build_manifests(config: ml_collections.ConfigDict, *, names=None,
                    progress: bool = True) -> dict[str, list[Utterance]]:
  """Writes `config.data[name]` for every `config.data.sources` entry (or `names`).

  Then, with `config.data.language` other than English: when `config.distill.teacher` is set,
  checks that the teacher's vocabulary covers the training transcripts (a clear `TextError`
  otherwise); else, when `config.tokenizer.vocab` names a file that does not exist yet, builds
  it from the training transcripts.
  """
  sources = config.data.sources
  names = list(names or sources.keys())
  out = {}
  for name in names:
    if name not in sources:
      raise ValueError(f"config.data.sources has no entry {name!r}; entries: {list(sources)}")
    target = config.data[name]
    utts, reports = read_source(sources[name], config.data.corpus_dir, progress=progress)
    skipped = sum(len(r.skipped) for r in reports)
    write_manifest(target, utts)
    hours = sum(u.duration for u in utts) / 3600
    log.info("%s: %d utterances, %.2f h -> %s (%d undecodable skipped)", name, len(utts),
             hours, target, skipped)
    out[name] = utts
  _vocabulary(config, out)
  return out


def _vocabulary(config: ml_collections.ConfigDict, built: dict[str, list[Utterance]]) -> None:
  language = config.data.get("language", "en")
  if text_lib.language_code(language) == "en" and not config.tokenizer.vocab:
    return
  train = built.get("train")
  if train is None and os.path.exists(config.data.train):
    train = read_manifest(config.data.train)
  if not train:
    return
  texts = [u.text for u in train]
  teacher = config.distill.get("teacher", "")
  if teacher:
    vocab = os.path.join(teacher, "vocab.json")
    text_lib.check_coverage(text_lib.CharTokenizer.from_file(vocab), texts,
                            what=f"teacher vocabulary {vocab}", language=language)
    return
  path = config.tokenizer.vocab
  if path and not os.path.exists(path):
    tok, stats = text_lib.vocab_from_transcripts(texts, language=language)
    tok.save(os.path.dirname(os.path.abspath(path)))
    saved = os.path.join(os.path.dirname(os.path.abspath(path)), "vocab.json")
    if os.path.abspath(path) != saved:
      os.replace(saved, path)
    log.info("vocabulary of %d characters from %d training transcripts (%d skipped) -> %s",
             stats["characters"], stats["transcripts"], stats["skipped"], path)
