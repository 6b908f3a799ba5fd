"""Packing utterances into fixed windows (data/packing.py): first-fit decreasing, gaps, frame
alignment, and utterances longer than the window listed, never dropped silently."""

from __future__ import annotations

import numpy as np
import pytest

from distill_jax.data import packing


def test_first_fit_decreasing_with_gaps():
  # window 100, gap 10: 60 opens window 0, 50 does not fit after it (60 + 10 + 50 > 100) and
  # opens window 1, 30 fits after 60 (start 70), 20 after 50 (start 60), 5 after 20 (start 90).
  packed = packing.pack([30, 60, 20, 50, 5], window=100, gap=10)
  assert packed.windows == [[(1, 0), (0, 70)], [(3, 0), (2, 60), (4, 90)]]
  assert packed.too_long == []


def test_starts_are_aligned_and_never_overlap_or_overflow():
  rng = np.random.RandomState(0)
  sizes = rng.randint(1000, 60000, size=200).tolist() + [96000, 96001, 200000]
  window, gap, align = 96000, 6400, 320
  packed = packing.pack(sizes, window, gap, align)
  assert packed.too_long == [201, 202]  # longer than the window: listed, in no window
  placed = sorted(i for w in packed.windows for i, _ in w)
  assert placed == [i for i in range(len(sizes)) if sizes[i] <= window]
  for w in packed.windows:
    assert w[0][1] == 0
    for (i, s), (_, s_next) in zip(w, w[1:]):
      assert s_next % align == 0 and s_next >= s + sizes[i] + gap
    i, s = w[-1]
    assert s + sizes[i] <= window
  # Greedy first fit leaves no window that could take a later window's smallest utterance
  # after its own last one (the packing is not wasteful in the obvious way).
  for a, w in enumerate(packed.windows):
    room = window - packing._align_up(w[-1][1] + sizes[w[-1][0]] + gap, align)
    later = [sizes[i] for v in packed.windows[a + 1:] for i, _ in v]
    assert not later or min(later) > room


def test_exact_fit_and_ties_in_index_order():
  packed = packing.pack([40, 40, 40], window=90, gap=10)
  assert packed.windows == [[(0, 0), (1, 50)], [(2, 0)]]
  assert packing.pack([100], window=100, gap=10).windows == [[(0, 0)]]
  assert packing.pack([], window=100, gap=10) == packing.Packed([], [])


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_samples=[10], window=0, gap=1), "window=0"),
    (dict(num_samples=[10], window=100, gap=-1), "gap=-1"),
    (dict(num_samples=[10], window=100, gap=1, align=0), "align=0"),
    (dict(num_samples=[10, 0], window=100, gap=1), r"num_samples\[1\]=0"),
])
def test_bad_arguments_are_named(kwargs, match):
  with pytest.raises(ValueError, match=match):
    packing.pack(**kwargs)


def test_frame_range_shifts_the_frames_of_an_aligned_start():
  assert packing.frame_range(0, 25, 320) == (0, 25)
  assert packing.frame_range(6400, 25, 320) == (20, 45)
  assert packing.frame_range(6400, 0, 320) == (20, 20)
  with pytest.raises(ValueError, match="start=100.*multiple"):
    packing.frame_range(100, 3, 320)  # frames would not line up with the utterance's own
  with pytest.raises(ValueError, match="frame_samples=0"):
    packing.frame_range(0, 10, 0)
