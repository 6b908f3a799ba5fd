"""The one teacher interface: frozen params plus one pure forward at the teacher's frame rate.

    teacher.forward(params, waveform [B, S], paddings [B, S], layers=(l1, ...)) -> TeacherOutput(
        log_probs [B, Tt, V] float32 (temperature 1), hidden [P, B, Tt, D] float32 (P =
        len(layers), may be 0), frame_paddings [B, Tt] (1.0 marks padding))

Every user of a teacher goes through it: the cache writer (`train/teacher_cache.py`), the
online distillation step (`train/steps.py`), evaluation, the latent page and the benchmarks.
A family implements `Teacher` once: wav2vec2 directly (`models/wav2vec2_teacher.py`); an
encoder-decoder family through a character-CTC head on its encoder. Besides the forward a
teacher states its frame rate (`frame_samples`, `num_frames`), its vocabulary (the student's
must be the same, id by id, for the KL term), its hidden-state stack (`num_hidden_states`,
`hidden_size`), whether its valid frames depend on the padded length (`padding_invariant`),
and `describe()`, a JSON description of the architecture that a cache records.

`params_fingerprint(params)` is a teacher's identity: a sha256 over every param leaf, recorded
in caches and checkpoints so that neither is silently used with other weights.
"""

from __future__ import annotations

import abc
import copy
import hashlib
from typing import Any, Mapping, NamedTuple, Sequence

import jax
import numpy as np


class TeacherOutput(NamedTuple):
  """What a teacher gives for a padded batch (a pytree: jit and stop_gradient apply).

  Attributes:
    log_probs: [B, Tt, V] float32 log-posteriors at temperature 1.
    hidden: [P, B, Tt, D] float32, the requested hidden states in the requested order.
    frame_paddings: [B, Tt] float32, 1.0 marks padded frames.
  """
  log_probs: jax.Array
  hidden: jax.Array
  frame_paddings: jax.Array


def params_fingerprint(params: Any) -> str:
  """sha256 hex digest of a params tree: every leaf's key path, dtype, shape and bytes.

  Leaves are taken in the order of their sorted key paths (`jax.tree_util.keystr`), so the
  digest depends on the values only, not on the container types or on numpy vs jax arrays.
  """
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  items = sorted(((jax.tree_util.keystr(p), leaf) for p, leaf in leaves), key=lambda x: x[0])
  h = hashlib.sha256()
  for key, leaf in items:
    a = np.ascontiguousarray(np.asarray(leaf))
    h.update(f"{key}|{a.dtype.str}|{a.shape}\n".encode())
    h.update(a.reshape(-1).view(np.uint8))
  return h.hexdigest()


def check_vocab_match(student_vocab: Mapping[str, int], teacher_vocab: Mapping[str, int],
                      max_listed: int = 20) -> None:
  """Raises ValueError listing the differences when the two token -> id maps are not identical.

  The KL term compares posteriors entry by entry, so teacher and student need the same ids.
  """
  if dict(student_vocab) == dict(teacher_vocab):
    return

  def listing(items: list[str]) -> str:
    shown = ", ".join(items[:max_listed])
    more = len(items) - max_listed
    return f"[{shown}{f', ... and {more} more' if more > 0 else ''}]"

  only_s = sorted(set(student_vocab) - set(teacher_vocab), key=lambda x: student_vocab[x])
  only_t = sorted(set(teacher_vocab) - set(student_vocab), key=lambda x: teacher_vocab[x])
  moved = sorted((tok for tok in set(student_vocab) & set(teacher_vocab)
                  if student_vocab[tok] != teacher_vocab[tok]), key=lambda x: student_vocab[x])
  parts = [f"sizes {len(student_vocab)} (student) vs {len(teacher_vocab)} (teacher)"]
  if only_s:
    parts.append("only in the student: " + listing(
        [f"{tok!r} (id {student_vocab[tok]})" for tok in only_s]))
  if only_t:
    parts.append("only in the teacher: " + listing(
        [f"{tok!r} (id {teacher_vocab[tok]})" for tok in only_t]))
  if moved:
    parts.append("different ids: " + listing(
        [f"{tok!r} (student {student_vocab[tok]}, teacher {teacher_vocab[tok]})"
         for tok in moved]))
  raise ValueError("teacher vocabulary differs from the student tokenizer (the KL term needs "
                   "identical id spaces): " + "; ".join(parts))


class Teacher(abc.ABC):
  """A frozen teacher: params + a pure forward + what the users of its outputs need to know.

  Attributes (set by the implementation):
    family: 'wav2vec2', ...
    params: the frozen params (a pytree; passed to `forward`, never trained).
    vocab: {token: id} of its output classes (the character vocabulary).
    sample_rate: the waveform rate it takes.
    frame_samples: input samples per output frame (the frame rate is sample_rate / this).
    hidden_size: D of its hidden states.
    num_hidden_states: hidden-state indices are 0..num_hidden_states - 1.
    compute_dtype: the dtype its forward computes in (a cache records it).
    padding_invariant: whether the valid frames of a row are independent of how far the
      batch pads it (if not, a cache records each utterance's padded length).
  """
  family: str
  params: Any
  vocab: Mapping[str, int]
  sample_rate: int
  frame_samples: int
  hidden_size: int
  num_hidden_states: int
  padding_invariant: bool
  compute_dtype: str = "float32"

  @abc.abstractmethod
  def forward(self, params: Any, waveform: jax.Array, paddings: jax.Array,
              layers: Sequence[int] = ()) -> TeacherOutput:
    """Pure: waveform [B, S] float32 in [-1, 1], paddings [B, S] -> `TeacherOutput`."""

  @abc.abstractmethod
  def num_frames(self, num_samples: int) -> int:
    """Tt, the static frame count for a padded length of `num_samples` samples."""

  @abc.abstractmethod
  def describe(self) -> dict[str, Any]:
    """A JSON-able description of the architecture (a cache stores it and compares it)."""

  def with_params(self, params: Any) -> "Teacher":
    """The same teacher with other params (e.g. adapters merged in)."""
    new = copy.copy(self)
    new.params = params
    return new

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)

  def check_layers(self, layers: Sequence[int]) -> tuple[int, ...]:
    """`layers` as a tuple of ints, or an error naming an index that is not an integer, does
    not exist (0..num_hidden_states - 1) or repeats."""
    out: list[int] = []
    for i in layers:
      if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
        raise ValueError(f"layers: {i!r} is not an integer layer index")
      if not 0 <= int(i) < self.num_hidden_states:
        raise ValueError(f"layers: layer {int(i)} does not exist; the {self.family} teacher's "
                         f"hidden states have indices 0..{self.num_hidden_states - 1} (0 = the "
                         "input of the first layer)")
      if int(i) in out:
        raise ValueError(f"layers: layer {int(i)} appears more than once in {tuple(layers)}")
      out.append(int(i))
    return tuple(out)
