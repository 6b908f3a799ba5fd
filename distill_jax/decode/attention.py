"""Decoding for attention (sequence-to-sequence) students: greedy and beam search, jitted.

Both searches take a step function over a batch of N rows,

    step_fn(state, tokens [N] int32, position scalar int32) -> (logits [N, V], state)

where `state` is a pytree whose leaves have leading axis N (LSTM carries, a Transformer's
key/value cache) and tokens are the previous outputs (<s> at position 0). Everything runs
with static shapes inside `lax.while_loop`, stopping early once no row can still change.

Scores. A hypothesis y_1 .. y_n </s> scores its raw log-probability
s = sum_i log p(y_i | y_<i, x) (the </s> included), and is ranked by the GNMT length-normalized
score s / lp(|y|) with lp(n) = ((5 + n) / 6)^alpha and |y| counting </s> (Wu et al. 2016;
alpha = 0 ranks by s). A hypothesis still open after `max_length` tokens is scored as it stands
(no </s>).

Beam search keeps, per utterance, `beam_size` open hypotheses ranked by s (extensions of all
of them, top beam_size by s; those ending in </s> leave the beam and compete by normalized
score) and stops when the best finished normalized score cannot be beaten by any open one: for
alpha >= 0, s only decreases as a hypothesis grows, so s_now / lp(max_length) bounds every
extension. The greedy hypothesis is always a candidate of the final choice, so a beam never
returns a hypothesis the model scores below the greedy one (pruning alone does not guarantee
that: it can drop the greedy prefix). With beam_size = 1 the open hypothesis follows the greedy
path and the result is the best of it and of its prefixes ended by </s> (`decode_student` runs
plain greedy search for beam 1).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

Array = jax.Array
StepFn = Callable[[Any, Array, Array], tuple[Array, Any]]

_NEG_INF = -jnp.inf


def length_penalty(lengths: Array, alpha: float) -> Array:
  """GNMT lp(n) = ((5 + n) / 6)^alpha (1 for alpha = 0)."""
  return ((5.0 + lengths.astype(jnp.float32)) / 6.0) ** alpha


def greedy_search(step_fn: StepFn, state: Any, batch_size: int, max_length: int, bos_id: int,
                  eos_id: int, alpha: float = 0.0) -> dict[str, Array]:
  """Arg-max decoding of `batch_size` rows.

  Returns dict(tokens [B, max_length] int32 (the hypothesis, -1 after it, no </s>),
  lengths [B] (tokens before </s>), log_prob [B] (raw s), score [B] (normalized),
  finished [B] bool (</s> emitted)).
  """
  b, lmax = batch_size, max_length

  def cond(c):
    return (c["i"] < lmax) & ~jnp.all(c["done"])

  def body(c):
    logits, state = step_fn(c["state"], c["prev"], c["i"])
    lp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    tok = jnp.argmax(lp, axis=-1).astype(jnp.int32)
    live = ~c["done"]
    log_prob = c["log_prob"] + jnp.where(live, jnp.take_along_axis(lp, tok[:, None], 1)[:, 0],
                                         0.0)
    is_eos = tok == eos_id
    tokens = c["tokens"].at[:, c["i"]].set(jnp.where(live & ~is_eos, tok, -1))
    return dict(i=c["i"] + 1, state=state, prev=tok, tokens=tokens, log_prob=log_prob,
                lengths=c["lengths"] + (live & ~is_eos), done=c["done"] | is_eos)

  init = dict(i=jnp.int32(0), state=state, prev=jnp.full((b,), bos_id, jnp.int32),
              tokens=jnp.full((b, lmax), -1, jnp.int32), log_prob=jnp.zeros((b,), jnp.float32),
              lengths=jnp.zeros((b,), jnp.int32), done=jnp.zeros((b,), bool))
  c = jax.lax.while_loop(cond, body, init)
  n = c["lengths"] + c["done"]  # |y| counts </s>
  return dict(tokens=c["tokens"], lengths=c["lengths"], log_prob=c["log_prob"],
              score=c["log_prob"] / length_penalty(n, alpha), finished=c["done"])


def gather_beams(tree: Any, src: Array, batch_size: int, beam_size: int) -> Any:
  """Leaves [B*K, ...] reordered so row (b, k) takes row (b, src[b, k])."""
  def take(x):
    x = x.reshape((batch_size, beam_size) + x.shape[1:])
    idx = src.reshape(src.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, idx, axis=1).reshape((batch_size * beam_size,) + x.shape[2:])
  return jax.tree_util.tree_map(take, tree)


def beam_search(step_fn: StepFn, state: Any, batch_size: int, beam_size: int,
                max_length: int, bos_id: int, eos_id: int, alpha: float = 0.0,
                greedy: dict[str, Array] | None = None) -> dict[str, Array]:
  """Beam search over `batch_size` rows of `beam_size` hypotheses each.

  Args:
    step_fn, state: as in the module docstring, over N = batch_size * beam_size rows (row
      b * beam_size + k is hypothesis k of utterance b; every hypothesis of an utterance
      starts from the same state).
    greedy: the result of `greedy_search` on the same model and inputs (a final candidate);
      None skips it.

  Returns: as `greedy_search`, for the best hypothesis of each utterance.
  """
  b, k, lmax = batch_size, beam_size, max_length
  final_lp = length_penalty(jnp.int32(lmax), alpha)

  def cond(c):
    bound = jnp.max(c["alive_lp"], axis=1) / final_lp
    can_improve = jnp.isfinite(bound) & (bound > c["best_score"])
    return (c["i"] < lmax) & jnp.any(can_improve)

  def body(c):
    i = c["i"]
    logits, state = step_fn(c["state"], c["prev"].reshape(-1), i)
    lp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1).reshape(b, k, -1)
    v = lp.shape[-1]
    cand = c["alive_lp"][:, :, None] + lp                                   # [B, K, V]
    # Hypotheses ending in </s> now: length i + 1 with the </s>.
    eos_lp = cand[:, :, eos_id]                                             # [B, K]
    eos_score = eos_lp / length_penalty(i + 1, alpha)
    j = jnp.argmax(eos_score, axis=1)
    top_eos = jnp.take_along_axis(eos_score, j[:, None], 1)[:, 0]
    better = top_eos > c["best_score"]
    best_tokens = jnp.where(better[:, None],
                            jnp.take_along_axis(c["alive_tokens"], j[:, None, None], 1)[:, 0],
                            c["best_tokens"])
    best = dict(best_tokens=best_tokens,
                best_score=jnp.where(better, top_eos, c["best_score"]),
                best_lp=jnp.where(better, jnp.take_along_axis(eos_lp, j[:, None], 1)[:, 0],
                                  c["best_lp"]),
                best_len=jnp.where(better, i, c["best_len"]),
                best_finished=c["best_finished"] | better)
    # The others stay open: top K by raw log-probability.
    cand = cand.at[:, :, eos_id].set(_NEG_INF).reshape(b, k * v)
    alive_lp, flat = jax.lax.top_k(cand, k)                                 # [B, K]
    src, tok = flat // v, (flat % v).astype(jnp.int32)
    alive_tokens = jnp.take_along_axis(c["alive_tokens"], src[:, :, None], 1)
    alive_tokens = alive_tokens.at[:, :, i].set(tok)
    state = gather_beams(state, src, b, k)
    return dict(i=i + 1, state=state, prev=tok, alive_tokens=alive_tokens, alive_lp=alive_lp,
                **best)

  alive_lp = jnp.full((b, k), _NEG_INF, jnp.float32).at[:, 0].set(0.0)
  init = dict(i=jnp.int32(0), state=state, prev=jnp.full((b, k), bos_id, jnp.int32),
              alive_tokens=jnp.full((b, k, lmax), -1, jnp.int32), alive_lp=alive_lp,
              best_tokens=jnp.full((b, lmax), -1, jnp.int32),
              best_score=jnp.full((b,), _NEG_INF, jnp.float32),
              best_lp=jnp.full((b,), _NEG_INF, jnp.float32),
              best_len=jnp.zeros((b,), jnp.int32), best_finished=jnp.zeros((b,), bool))
  c = jax.lax.while_loop(cond, body, init)
  # Hypotheses still open at max_length compete as they stand.
  open_score = c["alive_lp"][:, 0] / final_lp
  use_open = (c["i"] >= lmax) & (open_score > c["best_score"])
  out = dict(tokens=jnp.where(use_open[:, None], c["alive_tokens"][:, 0], c["best_tokens"]),
             lengths=jnp.where(use_open, lmax, c["best_len"]),
             log_prob=jnp.where(use_open, c["alive_lp"][:, 0], c["best_lp"]),
             score=jnp.where(use_open, open_score, c["best_score"]),
             finished=jnp.where(use_open, False, c["best_finished"]))
  if greedy is not None:
    g = greedy["score"] > out["score"]
    out = {name: jnp.where(g.reshape(g.shape + (1,) * (x.ndim - 1)), greedy[name], x)
           for name, x in out.items()}
  return out


# --------------------------------------------------------------------------------------------
# An attention student (models/student.py AttentionStudent).
# --------------------------------------------------------------------------------------------


def _repeat(x: Array, k: int) -> Array:
  return jnp.repeat(x, k, axis=0)


def decode_student(model, params: Any, waveform: Array, wave_paddings: Array, *,
                   beam_size: int = 1, max_length_ratio: float = 1.0,
                   length_penalty_alpha: float = 0.0) -> dict[str, Array]:
  """Encodes a batch and decodes it (greedy for beam_size 1, else beam search).

  max_length = ceil(max_length_ratio * T) tokens for T encoder frames (static per shape).
  Returns the dict of `greedy_search`.
  """
  enc = model.apply({"params": params}, waveform, wave_paddings, method=model.encode)
  memory, mem_pad = enc["encoder_outputs"], enc["paddings"]
  b, t = mem_pad.shape
  lmax = max(1, int(-(-max_length_ratio * t // 1)))

  def run(mem, pad):
    state = model.apply({"params": params}, mem, lmax,
                        method=lambda m, x, n: m.decoder.init_state(x, n))

    def step_fn(st, tokens, position):
      return model.apply({"params": params}, st, mem, pad, tokens, position,
                         method=lambda m, *a: m.decoder.step(*a))
    return state, step_fn

  state, step_fn = run(memory, mem_pad)
  greedy = greedy_search(step_fn, state, b, lmax, model.bos_id, model.eos_id,
                         length_penalty_alpha)
  if beam_size == 1:
    return greedy
  state, step_fn = run(_repeat(memory, beam_size), _repeat(mem_pad, beam_size))
  return beam_search(step_fn, state, b, beam_size, lmax, model.bos_id, model.eos_id,
                     length_penalty_alpha, greedy=greedy)

