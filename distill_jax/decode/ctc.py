"""CTC decoding: jittable greedy decoding and a CTC prefix beam search.

Greedy (best path). Take the arg-max token of every valid frame, merge runs of the same token
and drop blanks. `ctc_greedy` does it with static shapes so it runs under jit: a token is kept
when it is not blank, not padding, and differs from the previous frame's arg-max (blank
included, so "a _ a" gives "a a"); kept tokens are compacted to the left with a scatter to
their running count, and the rest of the [B, T] output is filled with -1.

Prefix beam search. Best-path decoding scores one alignment; the probability of a label
sequence is the sum over all its alignments. Prefix beam search keeps, for each candidate
prefix l after frame t, the total probability of all frame paths of length t that collapse to
l, split by how they end: p_b(l) (ending in blank) and p_nb(l) (ending in l's last token). At
frame t + 1 with posteriors p(.):

    l stays l            p_b'(l)  += (p_b(l) + p_nb(l)) * p(blank)
                         p_nb'(l) += p_nb(l) * p(last(l))             (repeat, merged)
    l grows to l + c     p_nb'(l+c) += (p_b(l) + p_nb(l)) * p(c)      (c != last(l))
                         p_nb'(l+c) += p_b(l) * p(c)                   (c == last(l))

after which the `beam_size` prefixes with the largest p_b + p_nb are kept. Everything is in log
space. With no pruning (wide beam, `prune_threshold=None`) the score of a hypothesis is its
exact CTC log-likelihood log P(l | x), i.e. -ctc_loss(l). Beam 1 is not the same as greedy
decoding in general (it ranks prefixes by total, not single-path, probability), but the two
agree on peaky posteriors.

Shallow fusion with an n-gram LM is delegated to pyctcdecode + kenlm (optional dependencies)
in `ctc_beam_search_lm`.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from distill_jax.ondevice import ctc as ondevice_ctc

Hypothesis = tuple[tuple[int, ...], float]


# --------------------------------------------------------------------------------------------
# Greedy.
# --------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("blank_id",))
def ctc_greedy(logits: jax.Array, paddings: jax.Array,
               blank_id: int = 0) -> tuple[jax.Array, jax.Array]:
  """Best-path CTC decoding with static shapes (jittable).

  Args:
    logits: [B, T, V] logits or log-probabilities (only the arg-max is used).
    paddings: [B, T], 1.0 marks a padded frame.
    blank_id: blank index.

  Returns:
    (ids [B, T] int32: the collapsed token ids left-aligned, -1 after them;
     lengths [B] int32: number of tokens in each row).
  """
  bsz, t, _ = logits.shape
  best = jnp.argmax(logits, axis=-1).astype(jnp.int32)                  # [B, T]
  prev = jnp.pad(best, ((0, 0), (1, 0)), constant_values=-1)[:, :-1]
  valid = paddings < 0.5
  keep = valid & (best != blank_id) & (best != prev)
  lengths = jnp.sum(keep, axis=1, dtype=jnp.int32)
  # Destination column: running count of kept tokens; the others get the out-of-range
  # column T, which the scatter drops.
  dest = jnp.where(keep, jnp.cumsum(keep, axis=1, dtype=jnp.int32) - 1, t)
  rows = jnp.broadcast_to(jnp.arange(bsz)[:, None], (bsz, t))
  ids = jnp.full((bsz, t), -1, jnp.int32).at[rows, dest].set(best, mode="drop")
  return ids, lengths


def row_to_list(ids_row, length: int | None = None) -> list[int]:
  """One row of `ctc_greedy` ids as a Python list (up to `length`, or up to the first -1)."""
  row = np.asarray(ids_row).tolist()
  if length is not None:
    return row[:int(length)]
  return row[:row.index(-1)] if -1 in row else row


def to_lists(ids, lengths) -> list[list[int]]:
  """All rows of `ctc_greedy` output as Python lists."""
  ids, lengths = np.asarray(ids), np.asarray(lengths)
  return [row_to_list(ids[b], lengths[b]) for b in range(ids.shape[0])]


# --------------------------------------------------------------------------------------------
# Prefix beam search.
# --------------------------------------------------------------------------------------------


def _log_softmax_np(x: np.ndarray) -> np.ndarray:
  x = x.astype(np.float64)
  m = np.max(x, axis=-1, keepdims=True)
  return x - m - np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True))


def ctc_prefix_beam_search(log_probs: np.ndarray, beam_size: int, blank_id: int = 0,
                           prune_threshold: float | None = -20.0,
                           normalize: bool = False) -> list[Hypothesis]:
  """CTC prefix beam search for one utterance.

  Args:
    log_probs: [T, V] per-frame log-probabilities (NumPy or JAX array; only valid frames).
    beam_size: number of prefixes kept after each frame (and returned at most).
    blank_id: blank index.
    prune_threshold: at each frame only tokens with log-probability >= this value are
      expanded (the frame's best token always is). None disables pruning (exact scores).
    normalize: apply log-softmax first (pass logits with normalize=True).

  Returns:
    Up to `beam_size` (token_ids, log_score) pairs, best first, where log_score is the log of
    the total probability of the prefix (sum over its alignments among the surviving beams).
  """
  lp = np.asarray(log_probs, dtype=np.float64)
  if normalize and lp.ndim == 2:
    lp = _log_softmax_np(lp)
  # The one implementation, shared with the JAX-free runtime (which also fuses a word LM).
  return ondevice_ctc.prefix_beam_search(lp, beam_size, blank_id, prune_threshold)


def ctc_beam_search_batch(log_probs, paddings, beam_size: int, blank_id: int = 0,
                          prune_threshold: float | None = -20.0,
                          normalize: bool = False) -> list[list[Hypothesis]]:
  """`ctc_prefix_beam_search` over a padded batch.

  Args:
    log_probs: [B, T, V] log-probabilities (or logits with normalize=True).
    paddings: [B, T], 1.0 marks a padded frame (padding is trailing).
    beam_size, blank_id, prune_threshold, normalize: as in `ctc_prefix_beam_search`.

  Returns:
    For each utterance, its hypotheses best first.
  """
  log_probs = np.asarray(log_probs)
  lengths = np.sum(np.asarray(paddings) < 0.5, axis=1)
  return [
      ctc_prefix_beam_search(log_probs[b, :lengths[b]], beam_size, blank_id=blank_id,
                             prune_threshold=prune_threshold, normalize=normalize)
      for b in range(log_probs.shape[0])
  ]


# --------------------------------------------------------------------------------------------
# Optional n-gram shallow fusion (pyctcdecode + kenlm).
# --------------------------------------------------------------------------------------------


def build_lm_decoder(labels: Sequence[str], kenlm_model_path: str, *, blank_id: int = 0,
                     word_delimiter: str = "|", alpha: float = 0.5, beta: float = 1.0,
                     unigrams: Sequence[str] | None = None):
  """A pyctcdecode decoder with a KenLM n-gram model (shallow fusion).

  Args:
    labels: the token string of every id, in id order (e.g. the CharTokenizer vocabulary).
    kenlm_model_path: an ARPA or KenLM binary file.
    blank_id: blank index (its label becomes "" for pyctcdecode).
    word_delimiter: the token that separates words (becomes " " for pyctcdecode).
    alpha: LM weight; beta: word insertion bonus.
    unigrams: optional list of known words.

  Returns:
    A `pyctcdecode.BeamSearchDecoderCTC`.

  Raises:
    ImportError: pyctcdecode or kenlm is not installed (they are optional dependencies).
  """
  try:
    import pyctcdecode  # pylint: disable=g-import-not-at-top
    import kenlm  # pylint: disable=g-import-not-at-top,unused-import  # noqa: F401
  except ImportError as e:
    raise ImportError(
        "n-gram shallow fusion needs the optional packages pyctcdecode and kenlm "
        f"(`pip install pyctcdecode kenlm`); import failed: {e}") from e
  vocab = ["" if i == blank_id else (" " if tok == word_delimiter else tok)
           for i, tok in enumerate(labels)]
  return pyctcdecode.build_ctcdecoder(vocab, kenlm_model_path=kenlm_model_path,
                                      unigrams=list(unigrams) if unigrams else None,
                                      alpha=alpha, beta=beta)


def ctc_beam_search_lm(log_probs, decoder, beam_size: int) -> list[tuple[str, float]]:
  """Beam search with LM shallow fusion for one utterance.

  Args:
    log_probs: [T, V] log-probabilities of the valid frames.
    decoder: from `build_lm_decoder`.
    beam_size: beam width.

  Returns:
    (text, combined log score) pairs, best first; words are separated by spaces.
  """
  beams = decoder.decode_beams(np.asarray(log_probs, np.float32), beam_width=beam_size)
  out = []
  for beam in beams:  # OutputBeam (pyctcdecode >= 0.5) or a tuple (text, ..., lm_score)
    text = getattr(beam, "text", None)
    score = getattr(beam, "lm_score", None)
    if text is None:
      text, score = beam[0], beam[-1]
    out.append((text, float(score)))
  return out
