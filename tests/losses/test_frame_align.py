"""losses/frame_align.py: teacher posteriors and hidden states pooled to the student rate."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.losses import frame_align, kl

_align = jax.jit(frame_align.align_teacher, static_argnums=(2, 3))
_kl = jax.jit(kl.kl_divergence, static_argnames=("blank_id",))
_align_hidden = jax.jit(frame_align.align_hidden, static_argnums=(2, 3))


def _log_softmax(x, axis=-1):
  x = np.asarray(x, np.float64)
  m = np.max(x, axis=axis, keepdims=True)
  return x - m - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


@functools.partial(jax.jit, static_argnums=(3, 4))
def _align_both(log_probs, hidden, paddings, ratio, num_student_frames):
  return (frame_align.align_teacher(log_probs, paddings, ratio, num_student_frames),
          frame_align.align_hidden(hidden, paddings, ratio, num_student_frames))



def _np_align(teacher, tpad, r, ts):
  """Loop reference: mean of probabilities over valid frames of each group of r, then log."""
  b, tt, v = teacher.shape
  out = np.full((b, ts, v), -np.log(v))
  out_pad = np.ones((b, ts))
  probs = np.exp(_log_softmax(teacher))
  for i in range(b):
    for j in range(ts):
      frames = [f for f in range(j * r, min((j + 1) * r, tt)) if tpad[i, f] < 0.5]
      if frames:
        out[i, j] = np.log(np.mean(probs[i, frames], axis=0))
        out_pad[i, j] = 0.0
  return out, out_pad


def _np_align_hidden(hidden, tpad, r, ts):
  b, tt, d = hidden.shape
  out, out_pad = np.zeros((b, ts, d)), np.ones((b, ts))
  for i in range(b):
    for j in range(ts):
      frames = [f for f in range(j * r, min((j + 1) * r, tt)) if tpad[i, f] < 0.5]
      if frames:
        out[i, j] = np.mean(hidden[i, frames], axis=0)
        out_pad[i, j] = 0.0
  return out, out_pad


@pytest.mark.parametrize("ratio", [1, 2, 4])
@pytest.mark.parametrize("tt", [16, 19])  # a multiple of every ratio, and of none > 1
def test_align_teacher_matches_numpy_loop(ratio, tt):
  rng = np.random.default_rng(10 * ratio + tt)
  b, v, d = 3, 5, 4
  teacher = (3.0 * rng.normal(size=(b, tt, v))).astype(np.float32)
  hidden = rng.normal(size=(b, tt, d)).astype(np.float32)
  tpad = np.zeros((b, tt), np.float32)
  tpad[1, tt - 6:] = 1.0  # padded teacher frames, partly inside a group
  tpad[2, 1:] = 1.0
  teacher[tpad > 0.5] = np.nan  # ignored
  pooled = -(-tt // ratio)
  offsets = (-1, 0, 2) if tt % 2 else (0,)  # crop, exact, pad (on the partial-group case)
  for ts in (pooled + o for o in offsets):
    (lp, pad), (hs, hpad) = _align_both(jnp.asarray(teacher), jnp.asarray(hidden),
                                        jnp.asarray(tpad), ratio, ts)
    ref, ref_pad = _np_align(teacher, tpad, ratio, ts)
    assert lp.shape == (b, ts, v) and pad.shape == (b, ts)
    np.testing.assert_array_equal(pad, ref_pad)
    np.testing.assert_allclose(lp, ref, atol=1e-5)  # float32 log-probabilities
    np.testing.assert_allclose(jnp.sum(jnp.exp(lp), -1), 1.0, rtol=1e-5)
    href, href_pad = _np_align_hidden(hidden, tpad, ratio, ts)
    np.testing.assert_array_equal(hpad, href_pad)
    np.testing.assert_allclose(hs, href, atol=1e-6)


def test_align_hidden_stack_and_zero_probabilities():
  rng = np.random.default_rng(11)
  stack = rng.normal(size=(3, 2, 9, 4)).astype(np.float32)  # [L+1, B, Tt, D]
  tpad = np.zeros((2, 9), np.float32)
  tpad[0, 7:] = 1.0
  out, pad = _align_hidden(jnp.asarray(stack), jnp.asarray(tpad), 2, 5)
  assert out.shape == (3, 2, 5, 4)
  for layer in range(3):
    ref, ref_pad = _np_align_hidden(stack[layer], tpad, 2, 5)
    np.testing.assert_allclose(out[layer], ref, atol=1e-6)
    np.testing.assert_array_equal(pad, ref_pad)
  # A token no frame of a group gives probability to stays at -inf, and the KL handles it.
  teacher = np.zeros((1, 4, 3), np.float32)
  teacher[..., 2] = -np.inf
  lp, lpad = _align(jnp.asarray(teacher), jnp.zeros((1, 4)), 2, 2)
  assert np.all(np.isneginf(lp[..., 2])) and np.all(lpad == 0)
  res = _kl(jnp.zeros((1, 2, 3)), lp, lpad, 2.0)
  np.testing.assert_allclose(res["loss"], 4.0 * math.log(3 / 2), rtol=1e-6)


def test_alignment_errors():
  x, p = jnp.zeros((1, 20, 3)), jnp.zeros((1, 20))
  with pytest.raises(ValueError, match="mismatched frame rates without an alignment rule: the "
                     "teacher has 20 frames, which pool to 10 at ratio 2, but the student has "
                     "14 frames"):
    frame_align.align_teacher(x, p, 2, 14)
  with pytest.raises(ValueError, match="teacher has 20 frames.* ratio 1.* student has 5 frames"):
    frame_align.align_hidden(x, p, 1, 5)
  assert frame_align.check_frame_alignment(20, 2.0, 12) == 2  # within the default tolerance of 2
  for bad in (0, -2, 1.5, "2", True):
    with pytest.raises(ValueError, match=f"ratio must be a positive integer.*got {bad!r}"):
      frame_align.align_teacher(x, p, bad, 10)
  with pytest.raises(ValueError, match="unknown alignment rule 'max'"):
    frame_align.align_teacher(x, p, 2, 10, rule="max")


# ----------------------------------------------------------------------------- hidden states


