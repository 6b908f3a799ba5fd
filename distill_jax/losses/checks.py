"""Argument checks shared by the loss functions: static numbers in range, array shapes."""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax

Array = jax.Array


def check_range(name: str, value: Any, lo: float, hi: float | None = None,
                 lo_open: bool = False) -> None:
  """Checks a static (Python) number; traced values are left to the caller."""
  if not isinstance(value, numbers.Real):
    return
  bad = value <= lo if lo_open else value < lo
  if hi is not None:
    bad = bad or value > hi
  if bad or math.isnan(value):
    interval = f"{'(' if lo_open else '['}{lo}, {hi if hi is not None else 'inf'}" + (
        "]" if hi is not None else ")")
    raise ValueError(f"{name} must lie in {interval}, got {value!r}")


def check_shape(name: str, array: Array, shape: tuple[int, ...], hint: str = "") -> None:
  if tuple(array.shape) != tuple(shape):
    raise ValueError(f"{name} has shape {tuple(array.shape)}, expected {tuple(shape)}{hint}")



def check_frames(student_name: str, student: Array, teacher_name: str, teacher: Array,
                 paddings: Array, hint: str) -> None:
  """A student's [B, T, *] array, the teacher's of the same shape, and paddings [B, T]."""
  if student.ndim != 3:
    raise ValueError(f"{student_name} must be [B, T, *] (3 dims), got shape {student.shape}")
  check_shape(teacher_name, teacher, student.shape, hint)
  check_shape("paddings", paddings, student.shape[:2])
