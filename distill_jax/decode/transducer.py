"""Decoding for RNN-Transducer students: batched greedy and modified beam search, jitted.

Both run `lax.scan` over the encoder frames of a whole batch with static shapes. They take

    predict(state, tokens [N]) -> (pred_proj [N, J], state)   (prediction network + its joint
                                                               projection; state leaves [N, ...])
    joint(enc_proj [N, J], pred_proj [N, J]) -> logits [N, V]

and the projected encoder frames enc_proj [B, T, J] (`JointNetwork.project_encoder`), so the
encoder side of the joint is computed once per frame.

Greedy (icefall `greedy_search_batch`, with `max_symbols_per_frame`): on each frame take the
arg-max; a label is emitted (the prediction network advances) and the frame is read again, up
to `max_symbols_per_frame` labels, after which the search moves on; blank moves on. The score is
the sum of the chosen log-probabilities.

Modified beam search (icefall `modified_beam_search`; Kang et al. 2022, "Fast and parallel
decoding for transducer"): at most one label per frame. On each frame every hypothesis k of an
utterance proposes blank (same labels) or one label v, with score s_k + log p_k(.); the
`beam_size` best proposals over all K*V survive. Proposals with the same label sequence are
merged with logaddexp: a blank extension of hypothesis k and a label extension (j, v) coincide
exactly when y_k = y_j + v (different hypotheses have different labels, so no other proposals
can coincide). Proposals are merged before the top-K selection (icefall selects first and
merges after, so its beam can hold fewer than K distinct hypotheses). The score of a hypothesis is thus the log of the total probability of its
surviving alignments in the one-label-per-frame lattice. Greedy search with one symbol per frame
uses the same lattice and scores one path; it is a final candidate of the beam search (so the
beam never returns a lower score than greedy: pruning alone does not guarantee that), and with
beam_size = 1 the beam search is that greedy search.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

Array = jax.Array
PredictFn = Callable[[Any, Array], tuple[Array, Any]]
JointFn = Callable[[Array, Array], Array]

_NEG_INF = -jnp.inf


def _select(cond: Array, new: Any, old: Any) -> Any:
  """Per-row where over pytrees with leading axis N (cond [N])."""
  return jax.tree_util.tree_map(
      lambda a, b: jnp.where(cond.reshape(cond.shape + (1,) * (a.ndim - 1)), a, b), new, old)


def greedy_search(enc_proj: Array, enc_paddings: Array, pred_state: Any, predict: PredictFn,
                  joint: JointFn, blank_id: int = 0,
                  max_symbols_per_frame: int = 3) -> dict[str, Array]:
  """Batched greedy decoding.

  Args:
    enc_proj: [B, T, J] projected encoder frames; enc_paddings [B, T] (1.0 = padding).
    pred_state: the prediction network's initial state for B rows.

  Returns:
    dict(tokens [B, T * max_symbols_per_frame] int32 (-1 after the hypothesis), lengths [B],
    score [B] (sum of the chosen log-probabilities)).
  """
  if max_symbols_per_frame < 1:
    raise ValueError(f"max_symbols_per_frame must be >= 1, got {max_symbols_per_frame}")
  b, t, _ = enc_proj.shape
  lmax = t * max_symbols_per_frame
  pred, pred_state = predict(pred_state, jnp.full((b,), blank_id, jnp.int32))

  def frame(carry, xs):
    enc_t, valid = xs
    active = valid
    for _ in range(max_symbols_per_frame):
      lp = jax.nn.log_softmax(joint(enc_t, carry["pred"]).astype(jnp.float32), axis=-1)
      tok = jnp.argmax(lp, axis=-1).astype(jnp.int32)
      score = carry["score"] + jnp.where(active, jnp.take_along_axis(lp, tok[:, None], 1)[:, 0],
                                         0.0)
      emit = active & (tok != blank_id)
      rows = jnp.arange(b)
      tokens = carry["tokens"].at[rows, jnp.where(emit, carry["lengths"], lmax)].set(
          tok, mode="drop")
      new_pred, new_state = predict(carry["state"], tok)
      carry = dict(pred=_select(emit, new_pred, carry["pred"]),
                   state=_select(emit, new_state, carry["state"]), tokens=tokens,
                   lengths=carry["lengths"] + emit, score=score)
      active = emit
    return carry, None

  init = dict(pred=pred, state=pred_state, tokens=jnp.full((b, lmax), -1, jnp.int32),
              lengths=jnp.zeros((b,), jnp.int32), score=jnp.zeros((b,), jnp.float32))
  xs = (jnp.swapaxes(enc_proj, 0, 1), jnp.swapaxes(enc_paddings < 0.5, 0, 1))
  c, _ = jax.lax.scan(frame, init, xs)
  return dict(tokens=c["tokens"], lengths=c["lengths"], score=c["score"])


def _merge_matches(tokens: Array, lengths: Array, valid: Array) -> tuple[Array, Array]:
  """Which label extensions coincide with which blank extensions.

  tokens [B, K, L], lengths [B, K], valid [B, K] ->
    (match [B, K, K]: match[b, k, j] = y_k == y_j + last(y_k), both hypotheses valid;
     last [B, K] int32: the last label of each hypothesis (0 when empty)).
  """
  l = tokens.shape[-1]
  pos = jnp.arange(l)
  len_k, len_j = lengths[:, :, None], lengths[:, None, :]
  same = tokens[:, :, None, :] == tokens[:, None, :, :]                  # [B, K, J, L]
  prefix_ok = jnp.all(same | (pos[None, None, None, :] >= len_j[..., None]), axis=-1)
  match = (len_k == len_j + 1) & prefix_ok & valid[:, :, None] & valid[:, None, :]
  last = jnp.take_along_axis(tokens, jnp.maximum(lengths - 1, 0)[..., None], 2)[..., 0]
  return match, jnp.maximum(last, 0)


def modified_beam_search(enc_proj: Array, enc_paddings: Array, pred_state: Any,
                         predict: PredictFn, joint: JointFn, beam_size: int, blank_id: int = 0,
                         greedy: dict[str, Array] | None = None) -> dict[str, Array]:
  """icefall's modified beam search, batched (see module docstring).

  Args:
    enc_proj: [B, T, J]; enc_paddings [B, T].
    pred_state: initial prediction-network state for B * beam_size rows (row b * K + k is
      hypothesis k of utterance b).
    greedy: `greedy_search(..., max_symbols_per_frame=1)` on the same inputs, a final
      candidate; None skips it.

  Returns:
    dict(tokens [B, T] (-1 after the hypothesis), lengths [B], score [B]).
  """
  b, t, j = enc_proj.shape
  k = beam_size
  pred, pred_state = predict(pred_state, jnp.full((b * k,), blank_id, jnp.int32))

  def gather(tree, src):
    def take(x):
      x = x.reshape((b, k) + x.shape[1:])
      idx = src.reshape(src.shape + (1,) * (x.ndim - 2))
      return jnp.take_along_axis(x, idx, axis=1).reshape((b * k,) + x.shape[2:])
    return jax.tree_util.tree_map(take, tree)

  def frame(c, xs):
    enc_t, valid_t = xs                                                   # [B, J], [B]
    logits = joint(jnp.repeat(enc_t, k, axis=0), c["pred"])
    lp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1).reshape(b, k, -1)
    v = lp.shape[-1]
    cand = c["score"][:, :, None] + lp                                    # [B, K, V]
    alive = jnp.isfinite(c["score"])
    match, last = _merge_matches(c["tokens"], c["lengths"], alive)
    # Label extension (j, last(y_k)) of each matching j, as seen from blank extension k.
    ext = jnp.take_along_axis(cand[:, None, :, :], last[:, :, None, None], 3)[..., 0]
    ext = jnp.where(match, ext, _NEG_INF)                                 # [B, K, J]
    merged_blank = jnp.logaddexp(cand[:, :, blank_id], jax.nn.logsumexp(ext, axis=2))
    merged_blank = jnp.where(alive, merged_blank, _NEG_INF)
    killed = jnp.einsum("bkj,bkv->bjv", match.astype(jnp.float32),
                        jax.nn.one_hot(last, v, dtype=jnp.float32)) > 0
    cand = jnp.where(killed, _NEG_INF, cand).at[:, :, blank_id].set(merged_blank)
    score, flat = jax.lax.top_k(cand.reshape(b, k * v), k)               # [B, K]
    src, tok = flat // v, (flat % v).astype(jnp.int32)
    emit = tok != blank_id
    tokens = jnp.take_along_axis(c["tokens"], src[:, :, None], 1)
    lengths = jnp.take_along_axis(c["lengths"], src, 1)
    tokens = jnp.where((jnp.arange(t)[None, None] == lengths[..., None]) & emit[..., None],
                       tok[..., None], tokens)
    lengths = lengths + emit
    state, pred_g = gather(c["state"], src), gather(c["pred"], src)
    new_pred, new_state = predict(state, tok.reshape(-1))
    e = emit.reshape(-1)
    vk = jnp.repeat(valid_t, k)  # padded frames leave every hypothesis as it is
    new = dict(pred=_select(vk, _select(e, new_pred, pred_g), c["pred"]),
               state=_select(vk, _select(e, new_state, state), c["state"]),
               tokens=_select(valid_t, tokens, c["tokens"]),
               lengths=_select(valid_t, lengths, c["lengths"]),
               score=_select(valid_t, score, c["score"]))
    return new, None

  score0 = jnp.full((b, k), _NEG_INF, jnp.float32).at[:, 0].set(0.0)
  init = dict(pred=pred, state=pred_state, tokens=jnp.full((b, k, t), -1, jnp.int32),
              lengths=jnp.zeros((b, k), jnp.int32), score=score0)
  xs = (jnp.swapaxes(enc_proj, 0, 1), jnp.swapaxes(enc_paddings < 0.5, 0, 1))
  c, _ = jax.lax.scan(frame, init, xs)
  best = jnp.argmax(c["score"], axis=1)
  out = dict(tokens=jnp.take_along_axis(c["tokens"], best[:, None, None], 1)[:, 0],
             lengths=jnp.take_along_axis(c["lengths"], best[:, None], 1)[:, 0],
             score=jnp.take_along_axis(c["score"], best[:, None], 1)[:, 0])
  if greedy is not None:
    g = greedy["score"] > out["score"]
    out = dict(tokens=jnp.where(g[:, None], greedy["tokens"][:, :t], out["tokens"]),
               lengths=jnp.where(g, greedy["lengths"], out["lengths"]),
               score=jnp.where(g, greedy["score"], out["score"]))
  return out


# --------------------------------------------------------------------------------------------
# A transducer student (models/student.py TransducerStudent).
# --------------------------------------------------------------------------------------------


def decode_student(model, params: Any, waveform: Array, wave_paddings: Array, *,
                   beam_size: int = 1, max_symbols_per_frame: int = 3) -> dict[str, Array]:
  """Encodes a batch and decodes it: greedy (beam_size 1, `max_symbols_per_frame`) or modified
  beam search (one label per frame; greedy with one symbol per frame as a candidate)."""
  variables = {"params": params}
  enc = model.apply(variables, waveform, wave_paddings, method=model.encode)
  enc_proj = model.apply(variables, enc["encoder_outputs"], method=model.project_encoder)
  pad = enc["paddings"]
  b = pad.shape[0]
  predict = lambda st, tok: model.apply(variables, st, tok, method=model.predict_step)
  joint = lambda e, p: model.apply(variables, e, p, method=model.joint_logits)
  init = lambda n: model.apply(variables, n, method=model.init_predictor)
  if beam_size == 1:
    return greedy_search(enc_proj, pad, init(b), predict, joint, model.blank_id,
                         max_symbols_per_frame)
  greedy = greedy_search(enc_proj, pad, init(b), predict, joint, model.blank_id, 1)
  return modified_beam_search(enc_proj, pad, init(b * beam_size), predict, joint, beam_size,
                              model.blank_id, greedy=greedy)
