"""RNN-T decoding against plain-Python references: batched greedy (max symbols per frame) and
modified beam search (merging by label sequence); beam 1 = greedy; wider beams never below
greedy."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.decode import transducer as search
from distill_jax.models.heads import transducer as heads

V, J, BLANK = 6, 8, 0


JOINT = heads.JointNetwork(V, dim=J)


def _fns(kind, params):
  """predict, joint and init closures over a prediction network of `kind` and the joint."""
  pred = heads.PredictionNetwork(V, dim=J, kind=kind)

  def predict(state, tokens):
    g, state = pred.apply({"params": params["pred"]}, state, tokens, method=pred.step)
    return JOINT.apply({"params": params["joint"]}, g, method=JOINT.project_prediction), state

  joint_fn = lambda e, p: JOINT.apply({"params": params["joint"]}, e, p, method=JOINT.joint)
  init = lambda n: pred.apply({"params": params["pred"]}, n, method=pred.init_state)
  return predict, joint_fn, init


@functools.partial(jax.jit, static_argnames=("kind", "max_symbols"))
def _greedy(params, enc_proj, paddings, kind, max_symbols):
  predict, joint_fn, init = _fns(kind, params)
  return search.greedy_search(enc_proj, paddings, init(enc_proj.shape[0]), predict, joint_fn,
                              BLANK, max_symbols)


@functools.partial(jax.jit, static_argnames=("kind", "beam", "with_greedy"))
def _beam(params, enc_proj, paddings, kind, beam, with_greedy=False):
  predict, joint_fn, init = _fns(kind, params)
  b = enc_proj.shape[0]
  greedy = search.greedy_search(enc_proj, paddings, init(b), predict, joint_fn, BLANK, 1)
  return search.modified_beam_search(enc_proj, paddings, init(b * beam), predict, joint_fn,
                                     beam, BLANK, greedy=greedy if with_greedy else None)


def _model(seed, kind="lstm", rows=3, frames=8):
  """(params, enc_proj, jitted predict, jitted joint, init) of a random head."""
  pred = heads.PredictionNetwork(V, dim=J, kind=kind)
  rng = np.random.default_rng(seed)
  params = dict(
      pred=pred.init(jax.random.key(seed), jnp.zeros((1, 2), int), train=False)["params"],
      joint=JOINT.init(jax.random.key(seed + 100), jnp.zeros((1, 1, J)),
                       jnp.zeros((1, 1, J)))["params"])
  enc = jnp.asarray(rng.normal(size=(rows, frames, J)).astype(np.float32) * 2.0)
  enc_proj = JOINT.apply({"params": params["joint"]}, enc, method=JOINT.project_encoder)
  predict, joint_fn, init = _fns(kind, params)
  return params, enc_proj, jax.jit(predict), jax.jit(joint_fn), init


def _row(tree, r):
  return jax.tree_util.tree_map(lambda x: x[r:r + 1], tree)


def _ref_greedy(enc_proj, frames, predict, joint_fn, init, max_symbols):
  g, state = predict(init(1), jnp.array([BLANK]))
  hyp, score = [], 0.0
  for t in range(frames):
    for _ in range(max_symbols):
      lp = np.asarray(jax.nn.log_softmax(joint_fn(enc_proj[None, t], g)[0]))
      k = int(np.argmax(lp))
      score += lp[k]
      if k == BLANK:
        break
      hyp.append(k)
      g, state = predict(state, jnp.array([k]))
  return hyp, score


def _ref_beam(enc_proj, frames, predict, joint_fn, init, beam):
  """Merge proposals with equal label sequences (logaddexp), then keep the best `beam`."""
  g, state = predict(init(1), jnp.array([BLANK]))
  hyps = {(): (0.0, g, state)}
  for t in range(frames):
    cands = {}
    for ys, (score, g, st) in hyps.items():
      lp = np.asarray(jax.nn.log_softmax(joint_fn(enc_proj[None, t], g)[0]), np.float64)
      for v in range(V):
        key = ys if v == BLANK else ys + (v,)
        s = score + lp[v]
        parent = (ys, v)
        if key in cands:
          old = cands[key]
          cands[key] = (np.logaddexp(old[0], s), old[1] if old[1][1] == BLANK else parent)
        else:
          cands[key] = (s, parent)
    best = sorted(cands.items(), key=lambda kv: -kv[1][0])[:beam]
    new = {}
    for key, (s, (ys, v)) in best:
      _, g, st = hyps[ys]
      if v != BLANK:
        g, st = predict(st, jnp.array([v]))
      new[key] = (s, g, st)
    hyps = new
  ys, (score, _, _) = max(hyps.items(), key=lambda kv: kv[1][0])
  return list(ys), score


@pytest.mark.parametrize("kind", ["lstm", "stateless"])
@pytest.mark.parametrize("max_symbols", [1, 3])
def test_batched_greedy_matches_the_reference(kind, max_symbols):
  params, enc_proj, predict, joint_fn, init = _model(0, kind)
  paddings = jnp.zeros(enc_proj.shape[:2]).at[1, 5:].set(1.0)
  out = _greedy(params, enc_proj, paddings, kind, max_symbols)
  for r, frames in enumerate([8, 5, 8]):
    hyp, score = _ref_greedy(enc_proj[r], frames, predict, joint_fn, init, max_symbols)
    n = int(out["lengths"][r])
    assert np.asarray(out["tokens"][r, :n]).tolist() == hyp
    np.testing.assert_allclose(float(out["score"][r]), score, rtol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_modified_beam_search_matches_the_reference(seed):
  params, enc_proj, predict, joint_fn, init = _model(seed, rows=2, frames=6)
  paddings = jnp.zeros(enc_proj.shape[:2]).at[1, 4:].set(1.0)
  out = _beam(params, enc_proj, paddings, "lstm", 3)
  for r, frames in enumerate([6, 4]):
    hyp, score = _ref_beam(enc_proj[r], frames, predict, joint_fn, init, 3)
    n = int(out["lengths"][r])
    assert np.asarray(out["tokens"][r, :n]).tolist() == hyp
    np.testing.assert_allclose(float(out["score"][r]), score, rtol=1e-5)


def test_beam_one_equals_greedy_with_one_symbol_per_frame():
  params, enc_proj, _, _, _ = _model(5)
  paddings = jnp.zeros(enc_proj.shape[:2]).at[2, 3:].set(1.0)
  greedy = _greedy(params, enc_proj, paddings, "lstm", 1)
  beam = _beam(params, enc_proj, paddings, "lstm", 1)
  np.testing.assert_array_equal(beam["tokens"], greedy["tokens"])
  np.testing.assert_array_equal(beam["lengths"], greedy["lengths"])
  np.testing.assert_allclose(beam["score"], greedy["score"], rtol=1e-6)


def test_wider_beams_never_score_below_greedy():
  strictly_better = 0
  for seed in range(4):
    params, enc_proj, _, _, _ = _model(seed, rows=3, frames=10)
    paddings = jnp.zeros(enc_proj.shape[:2])
    greedy = np.asarray(_greedy(params, enc_proj, paddings, "lstm", 1)["score"])
    for k in (2, 4, 8):
      score = np.asarray(_beam(params, enc_proj, paddings, "lstm", k, True)["score"])
      assert np.all(score >= greedy - 1e-6)
      strictly_better += int(np.sum(score > greedy + 1e-6))
  assert strictly_better > 0


def test_padded_frames_do_not_change_a_hypothesis():
  params, enc_proj, _, _, _ = _model(7, rows=2, frames=8)
  paddings = jnp.zeros((2, 8)).at[1, 5:].set(1.0)
  out = _beam(params, enc_proj, paddings, "lstm", 4)
  alone = _beam(params, enc_proj[1:, :5], paddings[1:, :5], "lstm", 4)
  n = int(alone["lengths"][0])
  assert int(out["lengths"][1]) == n
  np.testing.assert_array_equal(out["tokens"][1, :n], alone["tokens"][0, :n])
  assert math.isclose(float(out["score"][1]), float(alone["score"][0]), rel_tol=1e-5)
