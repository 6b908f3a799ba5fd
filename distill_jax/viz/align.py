"""CTC forced alignment: the single best frame path of a known transcript (Viterbi, in JAX).

The CTC topology of labels l_1..l_U is the extended sequence z = (blank, l_1, blank, l_2, ...,
l_U, blank) of S = 2U + 1 states. A path visits one state per frame, starts in z_1 or z_2, ends
in z_S or z_{S-1}, and from state s moves to s (stay), s + 1, or s + 2 when z_{s+2} is a label
different from z_s (skipping a blank between two different labels; a repeated label needs the
blank between its copies). The Viterbi recursion over frames t = 1..T-1,

  delta_t(s) = log p_t(z_s) + max(delta_{t-1}(s), delta_{t-1}(s-1), delta_{t-1}(s-2) if allowed),

with back-pointers, gives the best path; its score is the max-product counterpart of the CTC
forward variable (log P(l | x) sums over paths, this takes the best one). Token u occupies the
frames where the path is in state 2u + 1 (1-based: z_{2u}); `token_spans` turns those into
[start, end) frame ranges and `word_spans` groups them into words at the word delimiter.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

_NEG = -1e30


@functools.partial(jax.jit, static_argnames=("blank_id",))
def _viterbi(log_probs: jax.Array, ext: jax.Array, skip_ok: jax.Array,
             blank_id: int) -> tuple[jax.Array, jax.Array]:
  del blank_id
  s = ext.shape[0]
  emit = log_probs[:, ext]  # [T, S]
  init = jnp.full((s,), _NEG, jnp.float32).at[:2].set(emit[0, :2])

  def step(delta, e):
    stay = delta
    move = jnp.concatenate([jnp.full((1,), _NEG), delta[:-1]])
    skip = jnp.where(skip_ok, jnp.concatenate([jnp.full((2,), _NEG), delta[:-2]]), _NEG)
    cand = jnp.stack([stay, move, skip])  # [3, S]
    ptr = jnp.argmax(cand, axis=0)
    return jnp.max(cand, axis=0) + e, ptr.astype(jnp.int32)

  delta, ptrs = jax.lax.scan(step, init, emit[1:])  # ptrs [T - 1, S]
  last = jnp.where(delta[s - 1] >= delta[s - 2], s - 1, s - 2) if s > 1 else jnp.int32(0)
  score = delta[last]

  def back(state, ptr_t):
    prev = state - ptr_t[state]
    return prev, state

  first, states = jax.lax.scan(back, last, ptrs, reverse=True)
  return jnp.concatenate([first[None], states]), score


def forced_align(log_probs, labels: Sequence[int], blank_id: int = 0) -> tuple[np.ndarray, float]:
  """Best CTC path of `labels` through log_probs [T, V] (valid frames only).

  Returns:
    (states [T] int32: the extended-sequence state (0-based) of each frame, 2u + 1 for label
     u and even numbers for blanks; score: the path's total log-probability).

  Raises:
    ValueError: a label equal to the blank or outside the vocabulary, or a transcript that no
      path of T frames can emit (it needs U frames plus one per repeated pair).
  """
  lp = np.asarray(log_probs, np.float32)
  if lp.ndim != 2:
    raise ValueError(f"log_probs must be [T, V], got shape {lp.shape}")
  t, v = lp.shape
  labels = [int(x) for x in labels]
  bad = [x for x in labels if x == blank_id or not 0 <= x < v]
  if bad:
    raise ValueError(f"labels {bad} are the blank ({blank_id}) or outside the vocabulary of "
                     f"size {v}")
  repeats = sum(a == b for a, b in zip(labels, labels[1:]))
  if t < len(labels) + repeats:
    raise ValueError(f"a transcript of {len(labels)} labels ({repeats} repeated pairs) needs at "
                     f"least {len(labels) + repeats} frames, got {t}")
  ext = np.full(2 * len(labels) + 1, blank_id, np.int32)
  ext[1::2] = labels
  skip_ok = np.zeros(len(ext), bool)
  skip_ok[3::2] = [a != b for a, b in zip(labels, labels[1:])]
  states, score = _viterbi(jnp.asarray(lp), jnp.asarray(ext), jnp.asarray(skip_ok), blank_id)
  return np.asarray(states), float(score)


def token_spans(states: np.ndarray, num_labels: int) -> np.ndarray:
  """[U, 2] [start, end) frame range of each label along a forced-alignment path."""
  states = np.asarray(states)
  spans = np.zeros((num_labels, 2), np.int64)
  for u in range(num_labels):
    frames = np.nonzero(states == 2 * u + 1)[0]
    spans[u] = (frames[0], frames[-1] + 1)
  return spans


def word_spans(labels: Sequence[int], spans: np.ndarray, word_delim_id: int,
               id_to_token: dict[int, str]) -> list[tuple[str, int, int]]:
  """(word, start frame, end frame) for each run of labels between word delimiters."""
  out, cur = [], []
  for u, lab in enumerate(list(labels) + [word_delim_id]):
    if lab == word_delim_id:
      if cur:
        out.append(("".join(id_to_token[int(labels[i])] for i in cur), int(spans[cur[0], 0]),
                    int(spans[cur[-1], 1])))
      cur = []
    else:
      cur.append(u)
  return out
