"""Which student layer learns which teacher layer, and the projections between their widths.

A mapping is a tuple of (student_layer, teacher_layer) pairs over hidden-state stacks
[L + 1, B, T, D] (index 0 = the input of the first layer, i = the output of layer i);
`HiddenProjections` gives each mapped student state its own Dense to the teacher width. The
projections train with the student and are dropped at export.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

LAYER_MAPPING_KINDS = ("last_k", "every_k", "explicit")


def layer_mapping(kind: str, num_student_layers: int, num_teacher_layers: int,
                  k: int | None = None,
                  pairs: Sequence[Sequence[int]] | None = None) -> tuple[tuple[int, int], ...]:
  """(student_layer, teacher_layer) pairs into [L + 1]-entry hidden-state stacks (0 = embedding).

  Kinds:
    'last_k': the last k layers onto the last k: (Ls - k + j, Lt - k + j) for j = 1..k.
    'every_k': student layer i -> teacher layer i * k for i = 1..Ls (PKD-skip); k defaults to
      Lt // Ls, e.g. 4 student / 12 teacher layers: (1, 3), (2, 6), (3, 9), (4, 12).
    'explicit': `pairs` as given (index 0, the input embedding, is allowed on either side).

  Raises:
    ValueError: unknown kind, missing/unexpected k or pairs, or a layer index that does not
      exist (named in the message), or a repeated pair.
  """
  for name, n in (("num_student_layers", num_student_layers),
                  ("num_teacher_layers", num_teacher_layers)):
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
      raise ValueError(f"{name} must be a positive integer, got {n!r}")
  ls, lt = num_student_layers, num_teacher_layers
  if kind not in LAYER_MAPPING_KINDS:
    raise ValueError(f"unknown layer mapping {kind!r}; supported: {LAYER_MAPPING_KINDS}")
  if kind != "explicit" and pairs is not None:
    raise ValueError(f"layer mapping {kind!r} takes k, not pairs (got pairs={pairs!r})")
  if kind == "explicit" and k is not None:
    raise ValueError(f"layer mapping 'explicit' takes pairs, not k (got k={k!r})")
  if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
    raise ValueError(f"k must be a positive integer, got {k!r}")

  if kind == "last_k":
    if k is None:
      raise ValueError("layer mapping 'last_k' needs k")
    for side, n in (("student", ls), ("teacher", lt)):
      if k > n:
        raise ValueError(f"last_k with k={k} needs {side} layer {n - k + 1}, which does not "
                         f"exist: the {side} has layers 1..{n} (hidden_states index 0 is the "
                         f"input embedding)")
    out = [(ls - k + j, lt - k + j) for j in range(1, k + 1)]
  elif kind == "every_k":
    k = lt // ls if k is None else k
    if k < 1:
      raise ValueError(f"every_k: the teacher ({lt} layers) has fewer layers than the student "
                       f"({ls}); give k explicitly or use 'explicit'")
    if ls * k > lt:
      raise ValueError(f"every_k with k={k} maps student layer {ls} to teacher layer {ls * k}, "
                       f"which does not exist: the teacher has layers 1..{lt} (hidden_states "
                       f"index 0 is the input embedding)")
    out = [(i, i * k) for i in range(1, ls + 1)]
  else:
    if pairs is None or len(pairs) == 0:
      raise ValueError("layer mapping 'explicit' needs a non-empty list of pairs")
    out = []
    for pair in pairs:
      if len(pair) != 2 or any(isinstance(i, bool) or not isinstance(i, int) for i in pair):
        raise ValueError(f"explicit layer pair {pair!r} must be two integers "
                         f"(student_layer, teacher_layer)")
      s, t = int(pair[0]), int(pair[1])
      if not 0 <= s <= ls:
        raise ValueError(f"student layer {s} in pair {(s, t)} does not exist: valid indices are "
                         f"0..{ls} (0 = the input embedding)")
      if not 0 <= t <= lt:
        raise ValueError(f"teacher layer {t} in pair {(s, t)} does not exist: valid indices are "
                         f"0..{lt} (0 = the input embedding)")
      if (s, t) in out:
        raise ValueError(f"layer pair {(s, t)} appears more than once")
      out.append((s, t))
  return tuple(out)


class HiddenProjections(nn.Module):
  """One Dense(teacher_dim) per mapped pair, named `proj_{s}_{t}`, on student hidden states.

  Trained with the student (keep its params next to the student's in the train state so the
  optimizer updates them) and dropped at export: only the student's params are saved for
  inference.

  Attributes:
    pairs: (student_layer, teacher_layer) pairs, e.g. from `layer_mapping`.
    teacher_dim: Dt, the teacher's hidden width.
    dtype: compute dtype of the projections.
  """
  pairs: Sequence[tuple[int, int]]
  teacher_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, hidden_states: Array) -> tuple[Array, ...]:
    """[L + 1, B, T, Ds] -> tuple of [B, T, Dt], in the order of `pairs`."""
    n = hidden_states.shape[0]
    seen = set()
    outs = []
    for s, t in self.pairs:
      if not 0 <= s < n:
        raise ValueError(f"student layer {s} in pair {(s, t)} does not exist: hidden_states has "
                         f"{n} entries (0 = the input embedding, 1..{n - 1} = layer outputs)")
      if (s, t) in seen:
        raise ValueError(f"layer pair {(s, t)} appears more than once")
      seen.add((s, t))
      outs.append(nn.Dense(self.teacher_dim, dtype=self.dtype, name=f"proj_{s}_{t}")(
          hidden_states[s]))
    return tuple(outs)
