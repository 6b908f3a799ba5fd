"""Local corpora: folders of audio files with a `transcripts.tsv` (`id<TAB>transcript`).

This is the layout of the real-speech clips in `shared/data/speech/`: the audio file of an id
is `<id>.<ext>` beside the TSV, for any extension soundfile reads. Durations come from the
file headers, so the pipeline can bucket without decoding.
"""

from __future__ import annotations

import glob
import os
from typing import Sequence

from distill_jax.audio import io as audio_io
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
