"""Generic lists of audio files with transcripts -> `Utterance` lists, TSV columns by name.

`read_list(path)` reads a JSONL list with `local.read_list` (`{"path", "text"[, "speaker",
"id"]}` per line; other keys ignored) and a TSV list here:

- A first line holding the cells `path` and `text` is a header that NAMES the columns, in any
  order: `path`, `text`, `speaker` and `id` are used; any other named column (a duration, a
  gender, a corpus tag) is ignored with one logged note naming it. Every data line must then
  have the header's column count.
- Without a header the columns are positional, `path<TAB>text[<TAB>speaker]`, as before; a line
  with more than three columns keeps its first three, and one logged note says how many lines
  had extra columns (name the columns in a header to use them).

Relative audio paths resolve against the list's folder. Ids are the `id` column when named,
else the audio file's stem (made unique with its parent folders, relative to the list's folder,
when stems repeat). A line with fewer than two columns, a missing audio file, a duplicate id or
a malformed header is a `ManifestError` naming the file and line.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import os

from distill_jax.audio import io as audio_io
from distill_jax.data import local
from distill_jax.data.manifest import ManifestError, Utterance

log = logging.getLogger(__name__)

ENGINE = "list"
USED_COLUMNS = ("id", "path", "text", "speaker")
POSITIONAL = ("path", "text", "speaker")


def read_list(path: str) -> list[Utterance]:
  """Utterances of a JSONL (`local.read_list`) or TSV (module docstring) list."""
  if path.endswith((".jsonl", ".json")):
    return local.read_list(path)
  return read_tsv_list(path)


def _header(path: str, cells: list[str]) -> list[str] | None:
  """Column names when `cells` (line 1) is a header, else None."""
  if "path" not in cells or "text" not in cells:
    return None
  dup = sorted(c for c, n in collections.Counter(cells).items() if n > 1)
  if dup or "" in cells:
    raise ManifestError(f"{path}:1: header {cells!r}: column names must be distinct and "
                        f"non-empty (repeated: {dup})")
  unused = [c for c in cells if c not in USED_COLUMNS]
  if unused:
    log.info("%s: column(s) %s of the header are not used (used: %s)", path, unused,
             list(USED_COLUMNS))
  return cells


def read_tsv_list(path: str) -> list[Utterance]:
  """Utterances of a TSV list (module docstring).

  Raises:
    ManifestError: missing list, a line with fewer than two columns (or, under a header, not
      the header's count), a missing audio file, a duplicate id, a malformed header.
  """
  if not os.path.exists(path):
    raise ManifestError(f"list not found: {path}")
  base = os.path.dirname(os.path.abspath(path))
  with open(path, encoding="utf-8") as f:
    lines = [(n, line.rstrip("\r\n")) for n, line in enumerate(f, 1)]
  names = None
  rows, extra = [], []
  for lineno, line in lines:
    if not line.strip():
      continue
    cols = line.split("\t")
    if lineno == 1:
      names = _header(path, cols)
      if names is not None:
        continue
    if names is not None:
      if len(cols) != len(names):
        raise ManifestError(f"{path}:{lineno}: {len(cols)} column(s), the header names "
                            f"{len(names)} ({names}): {line[:60]!r}")
      row = dict(zip(names, cols))
    else:
      if len(cols) < 2:
        raise ManifestError(f"{path}:{lineno}: expected 'path<TAB>text[<TAB>speaker]' (or a "
                            f"header line naming the columns), got {len(cols)} column(s): "
                            f"{line[:60]!r}")
      if len(cols) > len(POSITIONAL):
        extra.append((lineno, len(cols)))
      row = dict(zip(POSITIONAL, cols))
    audio = row["path"] if os.path.isabs(row["path"]) else os.path.join(base, row["path"])
    if not os.path.exists(audio):
      raise ManifestError(f"{path}:{lineno}: no audio file {audio}")
    rows.append((row.get("id", ""), audio, row["text"], row.get("speaker", ""), lineno))
  if extra:
    log.info("%s: %d line(s) have more than %d columns (first: line %d, %d columns); columns "
             "4+ are ignored (a header line naming the columns, e.g. 'path<TAB>text<TAB>speaker"
             "<TAB>id', uses them)", path, len(extra), len(POSITIONAL), *extra[0])
  stems = collections.Counter(os.path.splitext(os.path.basename(r[1]))[0] for r in rows)
  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    headers = list(pool.map(audio_io.audio_info, [r[1] for r in rows]))
  out, seen = [], {}
  for (uid, audio, text, speaker, lineno), (frames, rate, _) in zip(rows, headers):
    if not uid:
      stem = os.path.splitext(os.path.basename(audio))[0]
      uid = stem if stems[stem] == 1 else os.path.splitext(
          os.path.relpath(audio, base))[0].replace(os.sep, "_")
    if uid in seen:
      raise ManifestError(f"{path}:{lineno}: duplicate utterance id {uid!r} (first on line "
                          f"{seen[uid]})")
    seen[uid] = lineno
    out.append(Utterance(uid, audio, text, speaker, ENGINE, frames / rate))
  return out
