"""The distillation step: online and cached teacher, frozen teacher, hard-label modes."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import base
from distill_jax.models import build
from distill_jax.models import wav2vec2 as w2v
from distill_jax.models.wav2vec2_teacher import Wav2Vec2Teacher
from distill_jax.train import parallel, state as state_lib, steps

V = 32


def _student():
  c = base.get_config()
  c.model.specaug_enabled = False
  c.model.conformer.update(dict(model_dim=16, num_layers=2, num_heads=2, conv_kernel=3,
                                subsampling_channels=4, dropout_rate=0.0))
  return build.build_student(c.model, vocab_size=V)


def _teacher():
  cfg = w2v.Wav2Vec2Config(vocab_size=V, hidden_size=24, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=32, conv_dim=(8,) * 7,
                           num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                           hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                           final_dropout=0.0, layerdrop=0.0)
  params = w2v.init_params(cfg, seed=1)
  return Wav2Vec2Teacher(cfg, params, {}), params


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  lengths = [16000, 12800, 9600, 8000]
  s = max(lengths)
  wave = (0.3 * rng.normal(size=(4, s))).astype(np.float32)
  pad = np.zeros((4, s), np.float32)
  for i, n in enumerate(lengths):
    pad[i, n:], wave[i, n:] = 1.0, 0.0
  labels = rng.integers(5, V, size=(4, 6)).astype(np.int32)
  label_pad = np.zeros((4, 6), np.float32)
  label_pad[2:, 4:] = 1.0
  return dict(waveform=wave, wave_paddings=pad, labels=labels, label_paddings=label_pad,
              weights=np.array([1.0, 1.0, 1.0, 0.0], np.float32))


def _setup(spec, lr):
  student = _student()
  b = _batch()
  sp = student.init(jax.random.key(0), b["waveform"], b["wave_paddings"], train=False)["params"]
  params = steps.init_distill_params(student, spec, sp, 2, jax.random.key(1))
  tx = optax.adam(lr)
  st = state_lib.create_state(params, tx, seed=0)
  return student, tx, st, b


def _run(spec, online=True, num_steps=1, lr=1e-3):
  teacher, tparams = _teacher()
  layers = tuple(t for _, t in spec.layer_pairs)
  tfn = lambda p, w, m: teacher.forward(p, w, m, layers)
  student, tx, st, b = _setup(spec, lr)
  sched = lambda step: lr
  step = steps.make_distill_train_step(student, tx, sched, spec,
                                       teacher_fn=tfn if online else None)
  par = parallel.parallelize(step, parallel.make_mesh(jax.devices()[:1]), num_frozen=1)
  st = par.put_state(st)
  if not online:
    t = jax.jit(tfn)(tparams, b["waveform"], b["wave_paddings"])
    b = dict(b, teacher_log_probs=np.asarray(t.log_probs),
             teacher_paddings=np.asarray(t.frame_paddings),
             teacher_hidden=np.asarray(t.hidden).swapaxes(0, 1))
    tparams = None
  frozen = par.put_frozen(tparams)
  history = []
  for _ in range(num_steps):
    st, m = par(st, par.put_batch(b), frozen)
    history.append(par.get_metrics(m))
  return par.get_state(st), history


SPEC = steps.KdSpec(alpha=0.5, beta=1.0, gamma=0.5, temperature=2.0, frame_ratio=2,
                    layer_pairs=((2, 2), (1, 1)), hidden_loss="l1_cos", teacher_dim=24)


@pytest.mark.slow  # builds a teacher cache and two distillation steps: about 90 s on 2 CPUs
def test_online_and_cached_teacher_give_the_same_step():
  s1, m1 = _run(SPEC, online=True)
  s2, m2 = _run(SPEC, online=False)
  for k in ("loss", "loss_hard", "loss_kl", "loss_hidden"):
    np.testing.assert_allclose(m1[0][k], m2[0][k], rtol=1e-4)  # same computation, 1e-4
  diff = jax.tree_util.tree_map(lambda a, b: float(jnp.max(jnp.abs(a - b))), s1.params,
                                s2.params)
  assert max(jax.tree_util.tree_leaves(diff)) < 1e-5


def test_total_is_the_weighted_sum_of_the_terms():
  _, hist = _run(SPEC, num_steps=1)
  m = hist[0]
  assert m["update_ok"]
  np.testing.assert_allclose(m["loss"], 0.5 * m["loss_hard"] + m["loss_kl"] + 0.5 *
                             m["loss_hidden"], rtol=1e-5)


@pytest.mark.parametrize("term,spec", [
    ("loss_kl", steps.KdSpec(alpha=0.0, beta=1.0, temperature=2.0, frame_ratio=2)),
    pytest.param("loss_hidden", steps.KdSpec(alpha=0.0, beta=0.0, gamma=1.0, frame_ratio=2,
                                             layer_pairs=((2, 2),), teacher_dim=24),
                 marks=pytest.mark.slow),  # the hidden losses have known-input unit tests
])
def test_each_distillation_term_alone_is_minimized(term, spec):
  """Training on one term pulls the student toward the (fixed) teacher on that term."""
  _, hist = _run(spec, num_steps=30, lr=1e-2)
  assert all(h["update_ok"] for h in hist)
  assert hist[-1][term] < 0.5 * hist[0][term], (hist[0][term], hist[-1][term])


def test_teacher_transcripts_as_hard_labels_and_kl_only():
  spec = steps.KdSpec(alpha=1.0, beta=0.0, hard_labels="teacher", frame_ratio=2)
  _, hist = _run(spec, num_steps=1)
  assert np.isfinite(hist[0]["loss_hard"]) and hist[0]["loss_kl"] > 0
  np.testing.assert_allclose(hist[0]["loss"], hist[0]["loss_hard"], rtol=1e-6)


def test_projections_are_trained_and_student_tree_is_separate():
  st, _ = _run(SPEC, num_steps=1)
  assert set(st.params) == {"student", "projections"}
  assert set(st.params["projections"]) == {"proj_2_2", "proj_1_1"}
  # One update moved every projection kernel (they are trained, not only present).
  init = _setup(SPEC, 1e-3)[2].params["projections"]
  for name in ("proj_2_2", "proj_1_1"):
    change = np.max(np.abs(np.asarray(st.params["projections"][name]["kernel"])
                           - np.asarray(init[name]["kernel"])))
    assert change > 1e-6, name


def test_bad_specs_are_named():
  with pytest.raises(ValueError, match="hard_labels"):
    steps.KdSpec(hard_labels="oracle")
  with pytest.raises(ValueError, match="gamma"):
    steps.KdSpec(gamma=1.0)
  teacher, _ = _teacher()
  x = jnp.zeros((1, 1600))
  with pytest.raises(ValueError, match=r"layers: layer 7 does not exist; the wav2vec2 teacher"):
    teacher.forward(teacher.params, x, x, (7,))
