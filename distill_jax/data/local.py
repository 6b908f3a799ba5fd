"""Local corpora -> `Utterance` lists, and the writer that turns decoded audio into one.

Readers (durations come from the file headers, so the pipeline can bucket without decoding):
- `read_transcripts_folder`: audio files with a `transcripts.tsv` (`id<TAB>transcript`), the
  layout of the real-speech clips in `data/real_english/`; the audio of an id is `<id>.<ext>`.
- `read_librispeech_dir`: the LibriSpeech release layout, `<subset>/<speaker>/<chapter>/
  <speaker>-<chapter>.trans.txt` (`ID TRANSCRIPT` lines) beside `ID.flac`; pass a subset folder
  (`LibriSpeech/test-clean`, globbed as `*/*/*.trans.txt`) or the `LibriSpeech` folder itself.
- `read_fleurs_dir`: one FLEURS language folder as published (`data/<lang>/` of google/fleurs):
  `<split>.tsv` without header, 7 columns (id, file_name, raw_transcription, transcription,
  characters, num_samples, gender; no quoting), audio extracted from `audio/<split>.tar.gz` to
  `audio/<split>/<file_name>`. The HF split name `validation` reads `dev.tsv`.
- `read_list`: a generic JSONL (`{"path", "text"[, "speaker", "id"]}`) or TSV
  (`path<TAB>text[<TAB>speaker]`, optional header line) list; relative paths resolve against
  the list's folder.

Writer: `write_audio_corpus` decodes records (Hugging Face rows, TFDS examples) on a thread
pool, writes each as 16 kHz 16-bit FLAC under `<out>/audio/<name>/` and the manifest
`<out>/<name>.jsonl`. Files already written are reused, so an interrupted run resumes; audio
that cannot be decoded is a counted skip listed in `<out>/<name>.skipped.json`.
"""

from __future__ import annotations

import collections
import concurrent.futures
import csv
import dataclasses
import glob
import json
import os
import re
from typing import Callable, Iterable, Sequence

import numpy as np
import soundfile as sf
import tqdm

from distill_jax.audio import io as audio_io
from distill_jax.data import pipeline
from distill_jax.data.manifest import ManifestError, Utterance, write_manifest

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3")


def read_transcripts_folder(folder: str, *, speaker: str = "") -> list[Utterance]:
  """Utterances of one folder; an id without audio, or a malformed line, is an error."""
  tsv = os.path.join(folder, "transcripts.tsv")
  if not os.path.exists(tsv):
    raise ManifestError(f"{folder}: no transcripts.tsv")
  audio = {}
  for path in glob.glob(os.path.join(folder, "*")):
    stem, ext = os.path.splitext(os.path.basename(path))
    if ext.lower() in AUDIO_EXTENSIONS:
      audio[stem] = path
  out = []
  with open(tsv, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      line = line.rstrip("\n")
      if not line.strip():
        continue
      if "\t" not in line:
        raise ManifestError(f"{tsv}:{lineno}: expected 'id<TAB>transcript', got {line[:60]!r}")
      uid, transcript = line.split("\t", 1)
      if uid not in audio:
        raise ManifestError(f"{tsv}:{lineno}: no audio file for id {uid!r} in {folder}")
      frames, rate, _ = audio_io.audio_info(audio[uid])
      out.append(Utterance(uid, audio[uid], transcript, speaker or os.path.basename(folder),
                           "human", frames / rate))
  return out


def manifest_from_folders(folders: Sequence[str], out_path: str) -> list[Utterance]:
  """Writes one JSONL manifest over several transcript folders; returns its utterances."""
  utts = [u for folder in folders for u in read_transcripts_folder(folder)]
  write_manifest(out_path, utts)
  return utts


def _durations(paths: Sequence[str], num_threads: int = 8) -> list[float]:
  """Seconds of each file from its header (threads: headers of 100k files take a while)."""
  def one(path):
    frames, rate, _ = audio_io.audio_info(path)
    return frames / rate
  with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
    return list(pool.map(one, paths))


def read_librispeech_dir(root: str, *, engine: str = "librispeech") -> list[Utterance]:
  """Utterances of a LibriSpeech-layout folder (a subset, or a folder of subsets).

  Raises:
    ManifestError: no `*.trans.txt` found, a malformed line, or a transcript id without its
      `.flac` (each naming the file and line).
  """
  found = sorted(glob.glob(os.path.join(root, "*", "*", "*.trans.txt")))
  if not found:
    found = sorted(glob.glob(os.path.join(root, "*", "*", "*", "*.trans.txt")))
  if not found:
    raise ManifestError(f"{root}: no */*/*.trans.txt (LibriSpeech layout: "
                        f"<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt)")
  rows = []
  for trans in found:
    folder = os.path.dirname(trans)
    with open(trans, encoding="utf-8") as f:
      for lineno, line in enumerate(f, 1):
        line = line.strip()
        if not line:
          continue
        parts = line.split(" ", 1)
        if len(parts) != 2 or not re.fullmatch(r"\d+-\d+-\d+", parts[0]):
          raise ManifestError(f"{trans}:{lineno}: expected 'SPEAKER-CHAPTER-UTT TRANSCRIPT', "
                              f"got {line[:60]!r}")
        audio = os.path.join(folder, parts[0] + ".flac")
        if not os.path.exists(audio):
          raise ManifestError(f"{trans}:{lineno}: no audio file {audio}")
        rows.append((parts[0], audio, parts[1]))
  secs = _durations([r[1] for r in rows])
  return [Utterance(uid, audio, txt, uid.split("-")[0], engine, d)
          for (uid, audio, txt), d in zip(rows, secs)]


FLEURS_TSV_COLUMNS = ("id", "file_name", "raw_transcription", "transcription", "characters",
                      "num_samples", "gender")


def read_fleurs_dir(root: str, split: str, *, text_column: str = "transcription",
                    language: str = "") -> list[Utterance]:
  """Utterances of one FLEURS language folder for `split` (train, validation|dev, test).

  Ids are `<language>_<file stem>`: FLEURS' own `id` is the sentence id, shared by the several
  speakers who read it. `text_column` is `transcription` (published normalized form) or
  `raw_transcription`.

  Raises:
    ManifestError: missing TSV, a row without 7 columns, or a file without its audio.
  """
  if text_column not in ("transcription", "raw_transcription"):
    raise ValueError(f"text_column must be 'transcription' or 'raw_transcription', "
                     f"got {text_column!r}")
  tsv_split = "dev" if split == "validation" else split
  tsv = os.path.join(root, f"{tsv_split}.tsv")
  if not os.path.exists(tsv):
    present = sorted(os.path.basename(p) for p in glob.glob(os.path.join(root, "*.tsv")))
    raise ManifestError(f"{root}: no {tsv_split}.tsv for split {split!r} (FLEURS layout: "
                        f"<split>.tsv + audio/<split>/*.wav); TSV files present: {present}")
  language = language or os.path.basename(os.path.normpath(root))
  audio_dirs = [os.path.join(root, "audio", tsv_split), os.path.join(root, tsv_split)]
  col = FLEURS_TSV_COLUMNS.index(text_column)
  rows = []
  with open(tsv, encoding="utf-8", newline="") as f:
    for lineno, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
      if not row or not any(row):
        continue
      if len(row) != len(FLEURS_TSV_COLUMNS):
        raise ManifestError(f"{tsv}:{lineno}: expected {len(FLEURS_TSV_COLUMNS)} tab-separated "
                            f"columns {FLEURS_TSV_COLUMNS}, got {len(row)}")
      audio = next((os.path.join(d, row[1]) for d in audio_dirs
                    if os.path.exists(os.path.join(d, row[1]))), None)
      if audio is None:
        raise ManifestError(f"{tsv}:{lineno}: no audio file {row[1]!r} in {audio_dirs[0]} "
                            f"(extract audio/{tsv_split}.tar.gz there)")
      uid = f"{language}_{os.path.splitext(row[1])[0]}"
      rows.append((uid, audio, row[col]))
  secs = _durations([r[1] for r in rows])
  return [Utterance(uid, audio, txt, "", "fleurs", d)
          for (uid, audio, txt), d in zip(rows, secs)]


def read_list(path: str) -> list[Utterance]:
  """Utterances of a generic JSONL or TSV list of (path, text[, speaker]).

  Ids are the `id` field when given, else the audio file's stem (made unique with its parent
  folders when stems repeat).

  Raises:
    ManifestError: unreadable line, missing field, missing audio, duplicate id.
  """
  if not os.path.exists(path):
    raise ManifestError(f"list not found: {path}")
  base = os.path.dirname(os.path.abspath(path))
  rows = []
  with open(path, encoding="utf-8") as f:
    lines = list(enumerate(f, 1))
  is_jsonl = path.endswith((".jsonl", ".json"))
  for lineno, line in lines:
    line = line.rstrip("\n")
    if not line.strip():
      continue
    if is_jsonl:
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise ManifestError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
      if not isinstance(row, dict):
        raise ManifestError(f"{path}:{lineno}: expected a JSON object, got {line[:60]!r}")
    else:
      cols = line.split("\t")
      if lineno == 1 and cols[:2] == ["path", "text"]:
        continue  # header
      if len(cols) not in (2, 3):
        raise ManifestError(f"{path}:{lineno}: expected 'path<TAB>text[<TAB>speaker]', got "
                            f"{len(cols)} column(s): {line[:60]!r}")
      row = dict(zip(("path", "text", "speaker"), cols))
    missing = [k for k in ("path", "text") if k not in row]
    if missing:
      raise ManifestError(f"{path}:{lineno}: missing field(s) {missing}; fields present: "
                          f"{sorted(row)}")
    audio = row["path"] if os.path.isabs(row["path"]) else os.path.join(base, row["path"])
    if not os.path.exists(audio):
      raise ManifestError(f"{path}:{lineno}: no audio file {audio}")
    rows.append((str(row.get("id", "")), audio, str(row["text"]), str(row.get("speaker", "")),
                 lineno))
  stems = collections.Counter(os.path.splitext(os.path.basename(r[1]))[0] for r in rows)
  out, seen = [], set()
  secs = _durations([r[1] for r in rows])
  for (uid, audio, txt, spk, lineno), d in zip(rows, secs):
    if not uid:
      stem = os.path.splitext(os.path.basename(audio))[0]
      uid = stem if stems[stem] == 1 else os.path.splitext(
          os.path.relpath(audio, base))[0].replace(os.sep, "_")
    if uid in seen:
      raise ManifestError(f"{path}:{lineno}: duplicate utterance id {uid!r}")
    seen.add(uid)
    out.append(Utterance(uid, audio, txt, spk, "list", d))
  return out


@dataclasses.dataclass(frozen=True)
class AudioRecord:
  """One utterance from an in-memory source; `decode()` returns float32 [S] at 16 kHz or
  raises `audio_io.AudioError` (e.g. `decode_audio_bytes` over a `datasets` row)."""
  id: str
  text: str
  speaker: str
  engine: str
  source: str  # names the origin in reports (hub path, file name in the archive)
  decode: Callable[[], np.ndarray]


def write_audio_corpus(records: Iterable[AudioRecord], out_dir: str, name: str, *,
                       max_hours: float = 0.0, max_utterances: int = 0,
                       num_threads: int = 4, progress: bool = True
                       ) -> tuple[list[Utterance], pipeline.DataReport]:
  """Decodes records to `<out_dir>/audio/<name>/<id>.flac` + `<out_dir>/<name>.jsonl`.

  Records are consumed in order and decoded `num_threads` at a time; iteration stops once
  `max_utterances` were written or `max_hours` of audio were (0 = no cap), so a streaming
  source reads no more than that. A FLAC already present from an earlier run is kept (resume).

  Returns:
    (utterances written, pipeline.DataReport of the skipped records: `corrupt_audio`,
    `duplicate_id`).
  """
  audio_dir = os.path.join(out_dir, "audio", name)
  os.makedirs(audio_dir, exist_ok=True)
  report = pipeline.DataReport(name=name)
  out: list[Utterance] = []
  seen: set[str] = set()

  def work(rec: AudioRecord):
    path = os.path.join(audio_dir, _safe_name(rec.id) + ".flac")
    if os.path.exists(path):
      try:
        frames, _, _ = audio_io.audio_info(path)
        return path, frames / pipeline.SAMPLE_RATE, None
      except audio_io.AudioError:
        pass  # a damaged earlier write: decode again
    try:
      wav = rec.decode()
    except audio_io.AudioError as e:
      return None, 0.0, str(e)
    tmp = path + ".tmp"
    sf.write(tmp, wav, pipeline.SAMPLE_RATE, subtype="PCM_16", format="FLAC")
    os.replace(tmp, path)
    return path, len(wav) / pipeline.SAMPLE_RATE, None

  def done() -> bool:
    return bool((max_utterances and len(out) >= max_utterances) or
                (max_hours and report.kept_seconds >= max_hours * 3600))

  bar = tqdm.tqdm(desc=f"writing {name} audio", unit="utt", disable=not progress,
                  dynamic_ncols=True)
  pending: collections.deque = collections.deque()

  def collect(rec, fut):
    path, secs, err = fut.result()
    bar.update()
    if err is not None:
      report.skip(Utterance(rec.id, rec.source, rec.text), "corrupt_audio", err)
      return
    if done():
      return
    out.append(Utterance(rec.id, path, rec.text, rec.speaker, rec.engine, round(secs, 4)))
    report.kept += 1
    report.kept_seconds += secs

  with concurrent.futures.ThreadPoolExecutor(max(1, num_threads)) as pool:
    for rec in records:
      if done():
        break
      if rec.id in seen:
        report.skip(Utterance(rec.id, rec.source, rec.text), "duplicate_id",
                    f"utterance id {rec.id!r} appears twice")
        continue
      seen.add(rec.id)
      pending.append((rec, pool.submit(work, rec)))
      while len(pending) > 2 * max(1, num_threads):
        collect(*pending.popleft())
    while pending:
      collect(*pending.popleft())
  bar.close()
  write_manifest(os.path.join(out_dir, f"{name}.jsonl"), out)
  with open(os.path.join(out_dir, f"{name}.skipped.json"), "w", encoding="utf-8") as f:
    json.dump(report.to_dict(), f, indent=1, ensure_ascii=False)
  return out, report


def _safe_name(uid: str) -> str:
  return re.sub(r"[^\w.-]", "_", uid)
