"""Noise file lists for the denoiser (issue 27), split so that no recording source is in two splits.

`split_by_source(items, test, dev)` takes (path, group, source) rows, e.g. ESC-50's
`{fold}-{src_file}-{take}-{target}.wav` clips with group = category and source = src_file (the
takes of one source are cuts of one recording), and, within each group, sends the sources in a
seeded order to 'test' (the first `test`), 'dev' (the next `dev`) and 'train' (the rest). Every
group keeps at least one training source, or the split is an error naming the group.
`write_list` writes one path per line relative to the list's folder (`mixing.read_noise_list`
reads it back).
"""

from __future__ import annotations

import collections
import hashlib
import os
from typing import Iterable, Sequence

SPLITS = ("train", "dev", "test")


def _rank(seed: int, source: str) -> tuple[str, str]:
  """A seeded pseudo-random order (sha256; CRC32 is linear, so its order hardly moves with the
  seed)."""
  return hashlib.sha256(f"{seed}:{source}".encode()).hexdigest(), source


def split_by_source(items: Iterable[tuple[str, str, str]], test: int, dev: int,
                    seed: int = 0) -> dict[str, list[str]]:
  """items: (path, group, source) -> {'train'|'dev'|'test': sorted paths}."""
  groups: dict[str, dict[str, list[str]]] = collections.defaultdict(
      lambda: collections.defaultdict(list))
  for path, group, source in items:
    groups[group][source].append(path)
  out: dict[str, list[str]] = {s: [] for s in SPLITS}
  for group in sorted(groups):
    sources = sorted(groups[group], key=lambda s: _rank(seed, s))
    if len(sources) <= test + dev:
      raise ValueError(f"noise group {group!r}: {len(sources)} source(s), need more than "
                       f"test={test} + dev={dev} to keep one for training")
    for k, source in enumerate(sources):
      split = "test" if k < test else "dev" if k < test + dev else "train"
      out[split].extend(groups[group][source])
  return {s: sorted(v) for s, v in out.items()}


def esc50_items(csv_path: str, audio_dir: str) -> list[tuple[str, str, str]]:
  """(path, category, src_file) rows of an ESC-50 metadata CSV whose audio file exists; a listed
  clip without its file is an error naming it."""
  import csv
  rows = []
  with open(csv_path, newline="", encoding="utf-8") as f:
    for r in csv.DictReader(f):
      missing = {"filename", "category", "src_file"} - set(r)
      if missing:
        raise ValueError(f"{csv_path}: no column(s) {sorted(missing)}")
      path = os.path.join(audio_dir, r["filename"])
      if not os.path.isfile(path):
        raise FileNotFoundError(f"{csv_path}: {r['filename']} is listed but {path} is missing")
      rows.append((path, r["category"], r["src_file"]))
  if not rows:
    raise ValueError(f"{csv_path}: no rows")
  return rows


def write_list(paths: Sequence[str], out: str, comment: str = "") -> None:
  base = os.path.dirname(os.path.abspath(out))
  os.makedirs(base, exist_ok=True)
  with open(out, "w", encoding="utf-8") as f:
    if comment:
      f.write(f"# {comment}\n")
    for p in paths:
      f.write(os.path.relpath(os.path.abspath(p), base) + "\n")
