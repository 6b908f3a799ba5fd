"""Manifests: one JSON object per line describing an utterance.

Every corpus source (synthetic TTS, LibriSpeech, FLEURS, local folders) ends as a list of
`Utterance` records; the input pipeline only ever sees manifests.

JSONL fields: id, path, text, speaker, engine, duration (seconds). `path` is stored relative to
the manifest's folder when it lies below it, so a corpus folder can be moved as a whole.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from typing import Iterable, Sequence

REQUIRED_FIELDS = ("id", "path", "text")


class ManifestError(ValueError):
  """A manifest line that cannot be used; the message names the file and line."""


@dataclasses.dataclass(frozen=True)
class Utterance:
  id: str
  path: str  # absolute path to the audio file
  text: str  # transcript as published (normalization happens in the pipeline)
  speaker: str = ""
  engine: str = ""
  duration: float = 0.0  # seconds; 0.0 when unknown


def read_manifest(path: str) -> list[Utterance]:
  """Reads a JSONL manifest; relative audio paths resolve against the manifest's folder."""
  base = os.path.dirname(os.path.abspath(path))
  if not os.path.exists(path):
    raise ManifestError(f"manifest not found: {path}")
  out = []
  seen = set()
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      line = line.strip()
      if not line:
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise ManifestError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
      missing = [k for k in REQUIRED_FIELDS if k not in row]
      if missing:
        raise ManifestError(
            f"{path}:{lineno}: missing field(s) {missing}; fields present: {sorted(row)}")
      if row["id"] in seen:
        raise ManifestError(f"{path}:{lineno}: duplicate utterance id {row['id']!r}")
      seen.add(row["id"])
      audio = row["path"]
      if not os.path.isabs(audio):
        audio = os.path.join(base, audio)
      out.append(Utterance(
          id=str(row["id"]), path=audio, text=str(row["text"]),
          speaker=str(row.get("speaker", "")), engine=str(row.get("engine", "")),
          duration=float(row.get("duration", 0.0))))
  return out


def write_manifest(path: str, utterances: Iterable[Utterance]) -> None:
  """Writes atomically (temp file + rename).

  Audio paths below the manifest's folder are stored relative to it; others are stored
  absolute (a path relative to the current directory would not survive a move of either).
  """
  base = os.path.dirname(os.path.abspath(path))
  os.makedirs(base, exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    for u in utterances:
      row = dataclasses.asdict(u)
      ap = os.path.abspath(u.path)
      row["path"] = os.path.relpath(ap, base) if ap.startswith(base + os.sep) else ap
      f.write(json.dumps(row, ensure_ascii=False) + "\n")
  os.replace(tmp, path)


def hold_out_speakers(utterances: Sequence[Utterance], num_speakers: int,
                      seed: int) -> tuple[list[Utterance], list[Utterance]]:
  """(held out, rest): every utterance of `num_speakers` speakers drawn with `seed` (from the
  sorted speaker names, so the draw does not depend on the order of the utterances)."""
  speakers = sorted({u.speaker for u in utterances})
  if "" in speakers:
    raise ManifestError("hold_out_speakers: some utterances have no speaker "
                        f"(e.g. {next(u.id for u in utterances if not u.speaker)!r})")
  if not 0 < num_speakers < len(speakers):
    raise ManifestError(f"hold_out_speakers: {num_speakers} of {len(speakers)} speakers; need "
                        "at least one on each side")
  held = set(random.Random(seed).sample(speakers, num_speakers))
  return ([u for u in utterances if u.speaker in held],
          [u for u in utterances if u.speaker not in held])
