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
  kind='librispeech_dir' | 'transcripts_folder' | 'list': paths (folders or list files; a TSV
    list may name its columns in a header, `lists.py`).
  kind='fleurs_dir': paths (language folders), splits, text_column.
  kind='kaldi_dir': paths (Kaldi data directories, `kaldi.py`), root (folder relative wav.scp
    paths resolve against; "": each data directory's parent), require_text (False keeps
    utterances without a transcript, unlabelled, with text "").
The materialized audio of the hub/TFDS kinds, and the cut segments of Kaldi directories with a
`segments` file, go under `config.data.corpus_dir`. Skipped utterances (counted by reason in the
log) are listed in `<manifest>.skipped.json` beside each manifest that has any.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import ml_collections

from distill_jax import text as text_lib
from distill_jax.data import kaldi
from distill_jax.data import lists
from distill_jax.data import local
from distill_jax.data import pipeline
from distill_jax.data.manifest import Utterance, read_manifest, write_manifest

log = logging.getLogger(__name__)

KINDS = ("hf_librispeech", "hf_fleurs", "tfds_librispeech", "librispeech_dir", "fleurs_dir",
         "transcripts_folder", "list", "kaldi_dir")


def source(kind: str, **fields: Any) -> ml_collections.ConfigDict:
  """A `config.data.sources` entry with every field of its kind (defaults filled in)."""
  if kind not in KINDS:
    raise ValueError(f"unknown source kind {kind!r}; kinds: {list(KINDS)}")
  base = dict(kind=kind, source="", config="", splits=(), paths=(), streaming=False,
              cache_dir="", num_proc=0, max_hours=0.0, max_utterances=0, text_column="",
              tfds_config="default", data_dir="", root="", require_text=True)
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
    utts = [u for p in entry.paths for u in lists.read_list(p)]
  elif kind == "kaldi_dir":
    for p in entry.paths:  # caps applied per directory, before any segment is cut
      left_n = entry.max_utterances - len(utts)
      left_h = entry.max_hours - sum(x.duration for x in utts) / 3600
      if (entry.max_utterances and left_n <= 0) or (entry.max_hours and left_h <= 0):
        break
      u, rep = read_kaldi(p, os.path.join(corpus_dir, "kaldi"), root=entry.get("root", ""),
                          require_text=entry.get("require_text", True),
                          max_utterances=left_n if entry.max_utterances else 0,
                          max_hours=left_h if entry.max_hours else 0.0)
      utts += u
      reports.append(rep)
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


def read_kaldi(data_dir: str, segments_dir: str, *, root: str = "", require_text: bool = True,
               max_utterances: int = 0, max_hours: float = 0.0
               ) -> tuple[list[Utterance], pipeline.DataReport]:
  """Utterances of one Kaldi data directory (segments cut under `segments_dir`) + its skips.

  `max_utterances` / `max_hours` (0: no cap) keep the first utterances in file order, applied
  before any segment is cut.
  """
  data = kaldi.read_kaldi_dir(data_dir, root=root or None, require_text=require_text)
  total, keep = 0.0, []
  for u in data.utterances:
    if (max_utterances and len(keep) >= max_utterances) or (
        max_hours and total >= max_hours * 3600):
      break
    keep.append(u)
    total += u.duration
  data.utterances = keep
  data.report.kept, data.report.kept_seconds = len(keep), total
  audio_dir = kaldi.segment_audio_dir(segments_dir, data_dir) if data.has_segments else None
  if data.unlabelled:
    log.info("%s: %d utterances without a transcript kept unlabelled (text \"\")", data_dir,
             len(data.unlabelled))
  return kaldi.to_utterances(data, audio_dir), data.report


def write_skip_list(manifest_path: str, reports: list[pipeline.DataReport]) -> str:
  """Writes `<manifest>.skipped.json` (every skipped utterance of `reports`: id, path, reason,
  detail) when any was skipped, else removes a stale one; returns a note for the log."""
  skipped = [s for r in reports for s in r.skipped]
  path = os.path.splitext(manifest_path)[0] + ".skipped.json"
  if not skipped:
    if os.path.exists(path):
      os.remove(path)  # from an earlier build of this manifest
    return ""
  counts: dict[str, int] = {}
  for s in skipped:
    counts[s["reason"]] = counts.get(s["reason"], 0) + 1
  with open(path, "w", encoding="utf-8") as f:
    json.dump({"skipped_by_reason": counts, "skipped": skipped}, f, indent=1, ensure_ascii=False)
  return f" ({len(skipped)} skipped {counts}, listed in {path})"


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
    write_manifest(target, utts)
    hours = sum(u.duration for u in utts) / 3600
    log.info("%s: %d utterances, %.2f h -> %s%s", name, len(utts), hours, target,
             write_skip_list(target, reports))
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
