"""Attention beam search: exact on a toy model (against exhaustive search), beam 1 = greedy,
wider beams never below greedy, scores equal the decoder's own teacher-forced log-probs."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.decode import attention as search
from distill_jax.models.heads import attention_decoder as ad

BOS, EOS, V = 1, 2, 5


def _toy(seed, length, scale=1.5):
  """A position-dependent bigram model: logits = table[position, previous token]."""
  table = jnp.asarray(np.random.default_rng(seed).normal(size=(length, V, V)) * scale,
                      jnp.float32)
  return table, np.asarray(jax.nn.log_softmax(table, -1))


@functools.partial(jax.jit, static_argnames=("beam", "alpha", "with_greedy"))
def _search(table, beam, alpha, with_greedy=True):
  """(greedy, beam search) on the toy model; one compilation per table shape and setting."""
  length = table.shape[0]
  step_fn = lambda state, tokens, position: (table[position, tokens], state)
  greedy = search.greedy_search(step_fn, jnp.zeros((1, 1)), 1, length, BOS, EOS, alpha)
  out = search.beam_search(step_fn, jnp.zeros((beam, 1)), 1, beam, length, BOS, EOS, alpha,
                           greedy if with_greedy else None)
  return greedy, out


def _exhaustive(log_probs, length, alpha):
  """Best normalized score over every hypothesis (ended by </s> or open at `length`)."""
  best = (-np.inf, None)
  others = [v for v in range(V) if v != EOS]
  for n in range(length + 1):
    for seq in itertools.product(others, repeat=n):
      prev, s = BOS, 0.0
      for i, tok in enumerate(seq):
        s += log_probs[i, prev, tok]
        prev = tok
      if n < length:
        s += log_probs[n, prev, EOS]
        size = n + 1
      else:
        size = n
      score = s / ((5 + size) / 6) ** alpha
      if score > best[0]:
        best = (score, seq)
  return best


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_wide_beam_finds_the_exhaustive_best(seed, alpha):
  length = 3
  table, lp = _toy(seed, length)
  score, seq = _exhaustive(lp, length, alpha)
  _, out = _search(table, (V - 1) ** length, alpha)  # wide enough to keep everything
  np.testing.assert_allclose(out["score"][0], score, rtol=1e-5)
  n = int(out["lengths"][0])
  assert tuple(np.asarray(out["tokens"][0, :n]).tolist()) == seq


@pytest.mark.parametrize("seed", range(6))
def test_beam_one_follows_the_greedy_path(seed):
  """Beam 1 keeps the greedy path open; it returns greedy's hypothesis or a prefix of it ended
  by </s> that scores higher."""
  table, _ = _toy(seed, 6)
  for alpha in (0.0, 0.6):
    greedy, beam = _search(table, 1, alpha, with_greedy=False)
    g, n = np.asarray(greedy["tokens"][0]), int(beam["lengths"][0])
    np.testing.assert_array_equal(np.asarray(beam["tokens"][0, :n]), g[:n])
    if n == int(greedy["lengths"][0]) and bool(beam["finished"][0]) == bool(greedy["finished"][0]):
      np.testing.assert_allclose(beam["score"], greedy["score"], rtol=1e-6)
    else:
      assert bool(beam["finished"][0]) and float(beam["score"][0]) > float(greedy["score"][0])


def test_wider_beams_never_score_below_greedy_on_toy_models():
  strictly_better = 0
  for seed in range(20):
    table, _ = _toy(seed, 6, scale=1.0)
    for beam in (2, 4, 8):
      greedy, out = _search(table, beam, 0.6)
      assert float(out["score"][0]) >= float(greedy["score"][0]) - 1e-6
      strictly_better += float(out["score"][0]) > float(greedy["score"][0]) + 1e-6
  assert strictly_better > 0  # the beam does find better hypotheses than greedy


def _rescore(dec, params, memory, paddings, tokens, length, finished):
  """Raw log-probability of <s> y (</s>) under teacher forcing (inputs padded to a fixed
  width, which the causal decoder ignores, so one compilation serves every hypothesis)."""
  y = [int(x) for x in np.asarray(tokens[:length])]
  inputs = jnp.asarray([[BOS] + y + [EOS] * (tokens.shape[0] - length)])
  lp = _teacher_forced(dec, params, memory, paddings, inputs)[0]
  targets = y + [EOS]
  n = len(targets) if finished else len(y)
  return float(sum(lp[i, targets[i]] for i in range(n)))


@functools.partial(jax.jit, static_argnums=0)
def _teacher_forced(dec, params, memory, paddings, inputs):
  return jax.nn.log_softmax(dec.apply({"params": params}, memory, paddings, inputs,
                                      train=False), -1)


@pytest.mark.parametrize("kind", ["lstm", pytest.param("transformer", marks=pytest.mark.slow)])
def test_beam_scores_are_the_decoders_own_log_probs_and_beat_greedy(kind):
  vocab, d, t, rows, length = 8, 16, 7, 3, 6
  rng = np.random.default_rng(0)
  memory = jnp.asarray(rng.normal(size=(rows, t, d)).astype(np.float32))
  paddings = jnp.zeros((rows, t)).at[2, 4:].set(1.0)
  dec = (ad.LstmDecoder(vocab, dim=d, attention="additive") if kind == "lstm" else
         ad.TransformerDecoder(vocab, dim=d, num_layers=1, attention="dot", num_heads=2))
  params = dec.init(jax.random.key(1), memory, paddings, jnp.zeros((rows, 1), int),
                    train=False)["params"]

  @functools.partial(jax.jit, static_argnames="k")
  def run(params, memory, paddings, k):
    def make(k):
      mem, pad = jnp.repeat(memory, k, 0), jnp.repeat(paddings, k, 0)
      state = dec.apply({"params": params}, mem, length, method=dec.init_state)
      fn = lambda st, tok, i: dec.apply({"params": params}, st, mem, pad, tok, i,
                                        method=dec.step)
      return fn, state
    greedy = search.greedy_search(*make(1), rows, length, BOS, EOS, 0.6)
    if k == 1:
      return greedy, greedy
    fn_k, state_k = make(k)
    return greedy, search.beam_search(fn_k, state_k, rows, k, length, BOS, EOS, 0.6, greedy)

  for k in (1, 3, 6):
    greedy, out = run(params, memory, paddings, k)
    for r in range(rows):
      assert float(out["score"][r]) >= float(greedy["score"][r]) - 1e-6
      ll = _rescore(dec, params, memory[r:r + 1], paddings[r:r + 1], out["tokens"][r],
                    int(out["lengths"][r]), bool(out["finished"][r]))
      np.testing.assert_allclose(float(out["log_prob"][r]), ll, rtol=1e-4, atol=1e-4)
