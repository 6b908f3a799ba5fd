"""Packing utterances into fixed windows (e.g. Whisper's 30 s) with silent gaps between them.

    packed = pack(num_samples, window=480000, gap=6400, align=320)
    packed.windows   # [[(utterance index, start sample), ...] per window], starts increasing
    packed.too_long  # indices of utterances longer than the window (never placed)
    first, stop = frame_range(start, num_frames, frame_samples=320)  # its frames [first, stop)

Greedy first-fit decreasing: utterances are taken longest first (ties: lower index first) and
each goes into the first window where it fits after the window's last utterance plus `gap`
samples of silence, its start rounded up to a multiple of `align`; a new window is opened when
none has room. The first utterance of a window starts at sample 0. With `align` = the model's
samples per output frame, every utterance starts on a frame boundary, so its frames in the
packed window line up with the frames it gets alone at the start of a window.

`frame_range` places an utterance's frames in its packed window: an utterance that gets
`num_frames` frames alone at the start of a window (the model's rule, e.g. the Whisper teacher's
`num_frames(n)`) gets frames [start / frame_samples, start / frame_samples + num_frames) at an
aligned start, so every mode decodes the same number of frames per utterance.

Pure Python: the data layer, no model, no JAX.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence


class Packed(NamedTuple):
  """Windows of (utterance index, start sample) and the utterances that fit in none."""
  windows: list[list[tuple[int, int]]]
  too_long: list[int]


def _align_up(x: int, align: int) -> int:
  return -(-x // align) * align


def pack(num_samples: Sequence[int], window: int, gap: int, align: int = 1) -> Packed:
  """Greedy first-fit decreasing packing of utterances into windows of `window` samples.

  Args:
    num_samples: each utterance's length in samples (> 0).
    window: samples per window (> 0).
    gap: samples of silence at least between consecutive utterances of a window (>= 0).
    align: starts are multiples of this (>= 1), e.g. the samples per output frame.

  Returns:
    Packed(windows, too_long): every utterance not longer than `window` appears in exactly one
    window; the others are listed in `too_long` (in index order).
  """
  if int(window) != window or window <= 0:
    raise ValueError(f"window={window}: must be a positive number of samples")
  if int(gap) != gap or gap < 0:
    raise ValueError(f"gap={gap}: must be a non-negative number of samples")
  if int(align) != align or align < 1:
    raise ValueError(f"align={align}: must be a positive number of samples")
  for i, n in enumerate(num_samples):
    if int(n) != n or n <= 0:
      raise ValueError(f"num_samples[{i}]={n}: must be a positive number of samples")
  order = sorted(range(len(num_samples)), key=lambda i: (-int(num_samples[i]), i))
  windows: list[list[tuple[int, int]]] = []
  ends: list[int] = []  # per window: the sample after its last utterance
  too_long = []
  for i in order:
    n = int(num_samples[i])
    if n > window:
      too_long.append(i)
      continue
    for w, end in enumerate(ends):
      start = _align_up(end + gap, align)
      if start + n <= window:
        windows[w].append((i, start))
        ends[w] = start + n
        break
    else:
      windows.append([(i, 0)])
      ends.append(n)
  return Packed(windows, sorted(too_long))


def frame_range(start: int, num_frames: int, frame_samples: int) -> tuple[int, int]:
  """[first, stop) output frames of an utterance packed at sample `start` (a multiple of
  `frame_samples`) that has `num_frames` frames alone at the start of a window."""
  if frame_samples < 1 or num_frames < 0 or start < 0 or start % frame_samples:
    raise ValueError(f"frame_range(start={start}, num_frames={num_frames}, "
                     f"frame_samples={frame_samples}): need start >= 0 a multiple of "
                     "frame_samples > 0 (pack with align=frame_samples), num_frames >= 0")
  return start // frame_samples, start // frame_samples + num_frames
