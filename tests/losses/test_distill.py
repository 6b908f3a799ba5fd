import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.losses import distill

# Jitted once per shape: faster than eager op-by-op dispatch, and checks that all of it traces.
_kl = jax.jit(distill.kl_divergence, static_argnames=("blank_id",))
_align = jax.jit(distill.align_teacher, static_argnums=(2, 3))
_align_hidden = jax.jit(distill.align_hidden, static_argnums=(2, 3))
_hidden = jax.jit(distill.hidden_loss, static_argnums=(3,))
_kl_grad = jax.jit(jax.grad(
    lambda z, a, p, t, **kw: distill.kl_divergence(z, a, p, t, **kw)["loss"]))
_hidden_grad = jax.jit(jax.grad(
    lambda s, t, p, kind: distill.hidden_loss(s, t, p, kind)["loss"]), static_argnums=(3,))


@functools.partial(jax.jit, static_argnums=(3, 4))
def _align_both(log_probs, hidden, paddings, ratio, num_student_frames):
  return (distill.align_teacher(log_probs, paddings, ratio, num_student_frames),
          distill.align_hidden(hidden, paddings, ratio, num_student_frames))


def _log_softmax(x, axis=-1):
  x = np.asarray(x, np.float64)
  m = np.max(x, axis=axis, keepdims=True)
  return x - m - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


def _np_kl(zs, at, pad, temperature, blank_weight=1.0, blank_threshold=0.9, blank_id=0):
  """Float64 loop reference of kl_divergence: (loss, weight)."""
  total, weight = 0.0, 0.0
  for b in range(zs.shape[0]):
    for f in range(zs.shape[1]):
      if pad[b, f] > 0.5:
        continue
      log_ps = _log_softmax(zs[b, f] / temperature)
      log_pt = _log_softmax(at[b, f] / temperature)
      pt = np.exp(log_pt)
      kl = sum(pt[v] * (log_pt[v] - log_ps[v]) for v in range(len(pt)) if pt[v] > 0)
      w = blank_weight if np.exp(_log_softmax(at[b, f]))[blank_id] > blank_threshold else 1.0
      total += w * kl
      weight += w
  return temperature**2 * total / weight, weight


def _kl_batch(seed, b=3, t=7, v=6):
  rng = np.random.default_rng(seed)
  zs = rng.normal(size=(b, t, v)).astype(np.float32)
  at = (2.0 * rng.normal(size=(b, t, v))).astype(np.float32)
  pad = np.zeros((b, t), np.float32)
  pad[1, 5:] = 1.0
  pad[2, 2:] = 1.0
  return zs, at, pad


# ----------------------------------------------------------------------------- KL


def test_kl_is_zero_when_student_equals_teacher():
  zs, _, pad = _kl_batch(0)
  for teacher in (zs, np.asarray(jax.nn.log_softmax(zs))):  # logits or log-probs
    res = _kl(jnp.asarray(zs), jnp.asarray(teacher), jnp.asarray(pad), 2.0)
    assert abs(float(res["loss"])) < 1e-6  # float32 rounding only
    assert float(res["num_frames"]) == 3 * 7 - 2 - 5


def test_kl_matches_numpy_reference():
  zs, at, pad = _kl_batch(1)
  at[0, 1, 2] = -np.inf  # a zero teacher probability: 0 log 0 = 0
  at[0, 3, :4] = -np.inf
  for temperature in (1.0, 2.5):
    res = _kl(jnp.asarray(zs), jnp.asarray(at), jnp.asarray(pad), temperature)
    ref, weight = _np_kl(zs, at, pad, temperature)
    np.testing.assert_allclose(res["loss"], ref, rtol=1e-5)  # float32 vs float64
    np.testing.assert_allclose(res["kl"], ref / temperature**2, rtol=1e-5)
    np.testing.assert_allclose(res["sum"] / res["weight"], ref, rtol=1e-5)
    assert float(res["weight"]) == weight
    g = _kl_grad(jnp.asarray(zs), jnp.asarray(at), jnp.asarray(pad), temperature)
    assert np.all(np.isfinite(g))


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kl_gradient_is_t_times_prob_difference_over_frames(temperature):
  zs, at, pad = _kl_batch(2)
  g = _kl_grad(jnp.asarray(zs), jnp.asarray(at), jnp.asarray(pad), temperature)
  ps = np.exp(_log_softmax(zs / temperature))
  pt = np.exp(_log_softmax(at / temperature))
  n = np.sum(1.0 - pad)
  expected = temperature * (ps - pt) / n * (1.0 - pad)[..., None]
  np.testing.assert_allclose(g, expected, atol=1e-6)  # float32 softmax differences


def test_padded_frames_contribute_nothing():
  zs, at, pad = _kl_batch(3)
  zs2, at2 = zs.copy(), at.copy()
  zs2[pad > 0.5] = 1e3
  at2[pad > 0.5] = np.nan  # garbage (even nan) in padded frames is ignored
  at2[2, 4] = -np.inf
  loss = lambda z, a: _kl(jnp.asarray(z), jnp.asarray(a), jnp.asarray(pad), 2.0)["loss"]
  np.testing.assert_array_equal(loss(zs, at), loss(zs2, at2))
  g = _kl_grad(jnp.asarray(zs2), jnp.asarray(at2), jnp.asarray(pad), 2.0)
  assert np.all(np.isfinite(g))
  assert float(jnp.abs(g[pad > 0.5]).max()) == 0.0


def test_blank_down_weighting():
  zs, at, pad = _kl_batch(4)
  at[:, ::2, 0] = 12.0  # even frames: the teacher is confidently blank (P(blank) > 0.99)
  confident = (np.exp(_log_softmax(at))[..., 0] > 0.9) & (pad < 0.5)
  assert confident.sum() >= 3 and (~confident & (pad < 0.5)).sum() >= 3
  for bw in (0.0, 0.3, 1.0):
    res = _kl(jnp.asarray(zs), jnp.asarray(at), jnp.asarray(pad), 2.0, blank_weight=bw,
              blank_threshold=0.9)
    ref, weight = _np_kl(zs, at, pad, 2.0, blank_weight=bw, blank_threshold=0.9)
    np.testing.assert_allclose(res["loss"], ref, rtol=1e-5)
    np.testing.assert_allclose(res["weight"], weight, rtol=1e-6)
    assert int(res["num_downweighted"]) == confident.sum()
  # blank_weight=0 is the KL over the other frames only.
  res0 = _kl(jnp.asarray(zs), jnp.asarray(at), jnp.asarray(pad), 2.0, blank_weight=0.0)
  only = _kl(jnp.asarray(zs), jnp.asarray(at), jnp.asarray(np.maximum(pad, confident)), 2.0)
  np.testing.assert_allclose(res0["loss"], only["loss"], rtol=1e-6)
  # Gradient: T * w_f (p_s - p_t) / W.
  g = _kl_grad(jnp.asarray(zs), jnp.asarray(at), jnp.asarray(pad), 2.0, blank_weight=0.3)
  w = np.where(confident, 0.3, 1.0) * (1.0 - pad)
  diff = np.exp(_log_softmax(zs / 2.0)) - np.exp(_log_softmax(at / 2.0))
  np.testing.assert_allclose(g, 2.0 * w[..., None] * diff / w.sum(), atol=1e-6)


def test_kl_argument_errors():
  zs, at, pad = (jnp.asarray(x) for x in _kl_batch(5))
  with pytest.raises(ValueError, match=r"temperature must lie in \(0.0, inf\), got 0.0"):
    distill.kl_divergence(zs, at, pad, 0.0)
  with pytest.raises(ValueError, match="blank_weight .* got 1.5"):
    distill.kl_divergence(zs, at, pad, blank_weight=1.5)
  with pytest.raises(ValueError, match=r"teacher_log_probs has shape \(3, 7, 5\)"):
    distill.kl_divergence(zs, at[..., :5], pad)


# ----------------------------------------------------------------------------- alignment


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
    distill.align_teacher(x, p, 2, 14)
  with pytest.raises(ValueError, match="teacher has 20 frames.* ratio 1.* student has 5 frames"):
    distill.align_hidden(x, p, 1, 5)
  assert distill.check_frame_alignment(20, 2.0, 12) == 2  # within the default tolerance of 2
  for bad in (0, -2, 1.5, "2", True):
    with pytest.raises(ValueError, match=f"ratio must be a positive integer.*got {bad!r}"):
      distill.align_teacher(x, p, bad, 10)
  with pytest.raises(ValueError, match="unknown alignment rule 'max'"):
    distill.align_teacher(x, p, 2, 10, rule="max")


# ----------------------------------------------------------------------------- hidden states


def test_hidden_losses_on_known_vectors():
  e1, e2 = np.eye(3, dtype=np.float32)[:2]
  student = jnp.asarray(np.stack([e1, 5.0 * e1, e1, e1])[None])  # [1, 4, 3]
  teacher = jnp.asarray(np.stack([e1, e1, e2, -e1])[None])
  # Per frame: identical, same direction, orthogonal, opposite.
  np.testing.assert_allclose(distill.nmse_frames(student, teacher)[0], [0.0, 0.0, 2.0, 4.0],
                             atol=1e-6)
  log2, lsig1 = math.log(2.0), math.log1p(math.exp(-1.0))  # -log sigmoid(0), -log sigmoid(1)
  expected = [lsig1, 4.0 / 3 + lsig1, 2.0 / 3 + log2, 2.0 / 3 + math.log1p(math.e)]
  np.testing.assert_allclose(distill.l1_cos_frames(student, teacher)[0], expected, rtol=1e-6)
  pad = jnp.asarray([[0.0, 0.0, 0.0, 1.0]])
  res = _hidden(student, teacher, pad, "nmse")
  np.testing.assert_allclose(res["loss"], 2.0 / 3, rtol=1e-6)
  assert float(res["num_frames"]) == 3
  res = _hidden(student, teacher, pad, "l1_cos", cos_weight=0.5)
  ref = (4.0 / 3 + 2.0 / 3 + 0.5 * (2 * lsig1 + log2)) / 3
  np.testing.assert_allclose(res["loss"], ref, rtol=1e-6)


def test_hidden_loss_random_reference_padding_and_zero_vectors():
  rng = np.random.default_rng(20)
  s = rng.normal(size=(2, 5, 8)).astype(np.float32)
  t = rng.normal(size=(2, 5, 8)).astype(np.float32)
  pad = np.zeros((2, 5), np.float32)
  pad[1, 3:] = 1.0
  valid = pad < 0.5
  sn = s / np.linalg.norm(s, axis=-1, keepdims=True)
  tn = t / np.linalg.norm(t, axis=-1, keepdims=True)
  cos = np.sum(sn * tn, -1)
  ref_nmse = np.sum((sn - tn) ** 2, -1)[valid].mean()
  ref_l1cos = (np.abs(s - t).mean(-1) + np.log1p(np.exp(-cos)))[valid].mean()
  loss = lambda x, kind: _hidden(jnp.asarray(x), jnp.asarray(t), jnp.asarray(pad), kind)["loss"]
  np.testing.assert_allclose(loss(jnp.asarray(s), "nmse"), ref_nmse, rtol=1e-5)
  np.testing.assert_allclose(loss(jnp.asarray(s), "l1_cos"), ref_l1cos, rtol=1e-5)
  s2 = s.copy()
  s2[pad > 0.5] = 0.0  # zero vectors in padded frames: same loss, finite zero gradient
  for kind in distill.HIDDEN_LOSS_KINDS:
    np.testing.assert_allclose(loss(jnp.asarray(s2), kind), loss(jnp.asarray(s), kind),
                               rtol=1e-6)
    g = _hidden_grad(jnp.asarray(s2), jnp.asarray(t), jnp.asarray(pad), kind)
    assert np.all(np.isfinite(g)) and float(jnp.abs(g[pad > 0.5]).max()) == 0.0
  # Several pairs: the mean of the per-pair losses.
  res = distill.hidden_states_loss([jnp.asarray(s), jnp.asarray(t)],
                                   [jnp.asarray(t), jnp.asarray(t)], jnp.asarray(pad), "nmse")
  np.testing.assert_allclose(res["per_pair"], [ref_nmse, 0.0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(res["loss"], ref_nmse / 2, rtol=1e-5)
  np.testing.assert_allclose(res["sum"] / res["num_frames"], res["loss"], rtol=1e-6)
  with pytest.raises(ValueError, match="unknown hidden-state loss 'mse'"):
    distill.hidden_loss(jnp.asarray(s), jnp.asarray(t), jnp.asarray(pad), "mse")
  with pytest.raises(ValueError, match=r"teacher states has shape \(2, 5, 4\)"):
    distill.hidden_loss(jnp.asarray(s), jnp.asarray(t[..., :4]), jnp.asarray(pad))


def test_layer_mapping_kinds():
  assert distill.layer_mapping("last_k", 4, 12, k=2) == ((3, 11), (4, 12))
  assert distill.layer_mapping("every_k", 4, 12) == ((1, 3), (2, 6), (3, 9), (4, 12))
  assert distill.layer_mapping("every_k", 3, 12, k=2) == ((1, 2), (2, 4), (3, 6))
  assert distill.layer_mapping("explicit", 2, 12, pairs=[[0, 0], (2, 12), (2, 8)]) == (
      (0, 0), (2, 12), (2, 8))


def test_layer_mapping_errors():
  with pytest.raises(ValueError, match="last_k with k=5 needs student layer 0"):
    distill.layer_mapping("last_k", 4, 12, k=5)
  with pytest.raises(ValueError, match="student layer 4 to teacher layer 16, which does not"):
    distill.layer_mapping("every_k", 4, 12, k=4)
  with pytest.raises(ValueError, match=r"teacher layer 13 in pair \(1, 13\) does not exist"):
    distill.layer_mapping("explicit", 4, 12, pairs=[(1, 13)])
  with pytest.raises(ValueError, match=r"student layer -1 in pair \(-1, 3\) does not exist"):
    distill.layer_mapping("explicit", 4, 12, pairs=[(-1, 3)])
  with pytest.raises(ValueError, match=r"pair \(1, 3\) appears more than once"):
    distill.layer_mapping("explicit", 4, 12, pairs=[(1, 3), (1, 3)])
  with pytest.raises(ValueError, match="unknown layer mapping 'first_k'"):
    distill.layer_mapping("first_k", 4, 12, k=1)
  with pytest.raises(ValueError, match="'last_k' needs k"):
    distill.layer_mapping("last_k", 4, 12)
  with pytest.raises(ValueError, match="takes k, not pairs"):
    distill.layer_mapping("every_k", 4, 12, pairs=[(1, 1)])
  with pytest.raises(ValueError, match="layer 5 does not exist: hidden_states has 5 entries"):
    distill.select_layers(jnp.zeros((5, 1, 2, 3)), [4, 5])


def test_hidden_projections():
  pairs = distill.layer_mapping("last_k", 3, 6, k=2)
  states = jnp.asarray(np.random.default_rng(30).normal(size=(4, 2, 5, 8)), jnp.float32)
  proj = distill.HiddenProjections(pairs, teacher_dim=12)
  params = proj.init(jax.random.PRNGKey(0), states)["params"]
  assert sorted(params) == ["proj_2_5", "proj_3_6"]
  out = proj.apply({"params": params}, states)
  assert len(out) == 2 and all(o.shape == (2, 5, 12) for o in out)
  k, bias = params["proj_3_6"]["kernel"], params["proj_3_6"]["bias"]
  np.testing.assert_allclose(out[1], states[3] @ k + bias, atol=1e-5)
  with pytest.raises(ValueError, match=r"student layer 4 in pair \(4, 6\) does not exist"):
    distill.HiddenProjections(((4, 6),), 12).init(jax.random.PRNGKey(0), states)


# ----------------------------------------------------------------------------- vocab, total


def test_check_vocab_match():
  vocab = {"<pad>": 0, "|": 1, "a": 2, "b": 3}
  distill.check_vocab_match(vocab, dict(vocab))
  teacher = {"<pad>": 0, "|": 1, "b": 2, "a": 3, "'": 4}
  with pytest.raises(ValueError) as err:
    distill.check_vocab_match({**vocab, "c": 4}, teacher)
  msg = str(err.value)
  assert "identical id spaces" in msg and "sizes 5 (student) vs 5 (teacher)" in msg
  assert "only in the student: ['c' (id 4)]" in msg
  assert "only in the teacher: [\"'\" (id 4)]" in msg
  assert "different ids: ['a' (student 2, teacher 3), 'b' (student 3, teacher 2)]" in msg


def test_distill_loss_combines_terms():
  res = distill.distill_loss({"loss": jnp.float32(2.0)}, {"loss": jnp.float32(3.0)}, 5.0,
                             alpha=0.5, beta=2.0, gamma=0.1)
  np.testing.assert_allclose(res["total"], 0.5 * 2.0 + 2.0 * 3.0 + 0.1 * 5.0, rtol=1e-6)
  assert float(res["hard"]) == 2.0 and float(res["kl"]) == 3.0 and float(res["hidden"]) == 5.0
  res = distill.distill_loss(1.0, 4.0, alpha=1.0, beta=0.5, gamma=0.0)
  assert float(res["total"]) == 3.0 and float(res["hidden"]) == 0.0
  res = distill.distill_loss(jnp.nan, 4.0, alpha=0.0, beta=0.5, gamma=0.0)
  assert float(res["total"]) == 2.0 and np.isnan(float(res["hard"]))  # 0-weighted: left out
  with pytest.raises(ValueError, match="gamma=0.1 weights the hidden term"):
    distill.distill_loss(1.0, 4.0, alpha=1.0, beta=0.5, gamma=0.1)
  with pytest.raises(ValueError, match=r"beta must lie in \[0.0, inf\), got -1.0"):
    distill.distill_loss(1.0, 4.0, alpha=1.0, beta=-1.0, gamma=0.0)


def test_everything_jits():
  zs, at, pad = (jnp.asarray(x) for x in _kl_batch(40, t=8, v=5))
  teacher_hidden = jnp.asarray(np.random.default_rng(41).normal(size=(4, 3, 16, 6)), jnp.float32)
  student_hidden = jnp.asarray(np.random.default_rng(42).normal(size=(3, 3, 8, 4)), jnp.float32)
  teacher_lp = jnp.repeat(at, 2, axis=1)  # 16 teacher frames at half the student frame length
  teacher_pad = jnp.repeat(pad, 2, axis=1)
  pairs = distill.layer_mapping("last_k", 2, 3, k=2)
  proj = distill.HiddenProjections(pairs, 6)
  proj_params = proj.init(jax.random.PRNGKey(0), student_hidden)

  @jax.jit
  def step(student_logits, proj_params):
    t_lp, t_pad = distill.align_teacher(teacher_lp, teacher_pad, 2, 8)
    both = jnp.maximum(pad, t_pad)
    kl = distill.kl_divergence(student_logits, t_lp, both, 2.0, blank_weight=0.5)
    t_states, _ = distill.align_hidden(
        jnp.stack(distill.select_layers(teacher_hidden, [t for _, t in pairs])), teacher_pad, 2, 8)
    hid = distill.hidden_states_loss(proj.apply(proj_params, student_hidden), list(t_states),
                                     both, "l1_cos")
    return distill.distill_loss(None, kl, hid, alpha=0.0, beta=1.0, gamma=0.5)

  res = step(zs, proj_params)
  assert all(np.isfinite(float(v)) for v in res.values())
  eager = _kl(zs, at, pad, 2.0, blank_weight=0.5)  # pooling repeats = identity
  np.testing.assert_allclose(res["kl"], eager["loss"], rtol=1e-5)
