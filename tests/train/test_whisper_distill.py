"""Hidden-state distillation from a Whisper teacher (models/whisper_teacher.py) into a CTC
student, online and through the teacher cache (train/teacher_cache.py writer,
data/teacher_cache.py reader).

A tiny random Whisper encoder + CTC head (d_model 64, 2 layers, a fixed 2 s window) teaches a
tiny conformer (2 layers, 40 ms frames: frame ratio 2 against Whisper's 20 ms) on four noise
clips whose lengths are not multiples of 160 or 320 samples (the teacher's valid-frame count
must still be `num_frames(n)`), padded to 1 s.

Tolerances: cached vs online teacher outputs on valid frames, |d| <= 1e-3 |online| + 1e-3
(float16 storage, relative rounding <= 4.9e-4); the hidden loss of a step on cached outputs vs
online, rtol 1e-2 (float16 teacher states).
"""

import os

import jax
import numpy as np
import optax
import pytest
import soundfile as sf

from configs import base
from distill_jax import text
from distill_jax.data import manifest as manifest_lib
from distill_jax.data import pipeline
from distill_jax.data import teacher_cache as tc
from distill_jax.models import build
from distill_jax.models import teacher as teacher_lib
from distill_jax.models.whisper_teacher import WhisperCtcTeacher
from distill_jax.train import parallel, state as state_lib, steps
from distill_jax.train import teacher as run_teacher
from distill_jax.train import teacher_cache as writer
from tests.models import test_whisper_ctc as tiny

TOKENIZER = text.CharTokenizer()
V = TOKENIZER.vocab_size
LENGTHS = (16000, 12899, 9700, 8051)  # samples; the bucket pads them to 16000
LAYERS = (2, 1)
PAIRS = ((2, 2), (1, 1))  # (student layer, Whisper hidden state); 2 = the final layer norm's
BUCKETS = pipeline.BucketSpec(boundaries=(1.0,), batch_seconds=4.0)


def _student():
  c = base.get_config()
  c.model.specaug_enabled = False
  c.model.conformer.update(dict(model_dim=16, num_layers=2, num_heads=2, conv_kernel=3,
                                subsampling_channels=4, dropout_rate=0.0))
  return c, build.build_student(c.model, vocab_size=V)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """(teacher, dataset, the one eval batch, the cache folder)."""
  folder = str(tmp_path_factory.mktemp("whisper_kd"))
  rng = np.random.default_rng(0)
  utts = []
  for i, n in enumerate(LENGTHS):
    path = os.path.join(folder, f"u{i}.flac")
    sf.write(path, (0.2 * rng.standard_normal(n)).clip(-1, 1), 16000)
    utts.append(manifest_lib.Utterance(f"utt{i}", path, "HELLO WORLD", duration=n / 16000))
  ds, _ = pipeline.prepare_dataset(utts, TOKENIZER, BUCKETS, progress=False, num_threads=1)
  model = tiny.tiny_model(V, window_samples=32000)  # Whisper's fixed window, 2 s here
  teacher = WhisperCtcTeacher(model, tiny.tiny_params(tiny.tiny_model(V)), TOKENIZER.vocab)
  cache = os.path.join(folder, "cache")
  writer.build_cache(teacher, ds, cache, layers=LAYERS, tokenizer=TOKENIZER, progress=False)
  batch = next(iter(pipeline.eval_batches(ds)))
  assert batch["waveform"].shape == (4, 16000)
  return teacher, ds, batch, cache


def test_frame_ratio_and_layer_pairs_from_the_config(setup):
  teacher = setup[0]
  c, _ = _student()
  c.distill.update(dict(gamma=1.0, layer_mapping="explicit", layer_pairs=PAIRS))
  assert run_teacher.frame_ratio(c, teacher) == 2  # 40 ms student / 20 ms Whisper
  assert run_teacher.layer_pairs(c, teacher) == PAIRS


def test_cache_holds_the_online_whisper_states(setup):
  teacher, ds, batch, cache_dir = setup
  cache = tc.open_cache(cache_dir, teacher_lib.params_fingerprint(teacher.params),
                        layers=LAYERS, vocab=TOKENIZER.vocab, description=teacher.describe(),
                        num_frames=teacher.num_frames, dataset=ds)
  got = cache.add_to_batch(batch)
  online = jax.jit(lambda p, w, m: teacher.forward(p, w, m, LAYERS))(
      teacher.params, batch["waveform"], batch["wave_paddings"])
  # Frames of the batch (50 of 20 ms in 1 s), not of the 2 s window; valid ones per row as
  # num_frames(n) of its own length (n = 12899 -> 40, not ceil(n / 320) = 41).
  assert got["teacher_hidden"].shape == (4, 2, 50, 64)
  np.testing.assert_array_equal(got["teacher_paddings"], np.asarray(online.frame_paddings))
  by_id = {str(u): i for i, u in enumerate(batch["ids"])}
  valid = (1 - got["teacher_paddings"]).sum(1)
  assert [int(valid[by_id[f"utt{i}"]]) for i in range(4)] == [
      teacher.num_frames(n) for n in LENGTHS] == [50, 40, 30, 25]
  mask = got["teacher_paddings"] < 0.5
  want = np.transpose(np.asarray(online.hidden), (1, 2, 0, 3))[mask]  # [P,B,T,D] -> [B,T,P,D]
  np.testing.assert_allclose(np.swapaxes(got["teacher_hidden"], 1, 2)[mask], want,
                             atol=1e-3, rtol=1e-3)
  np.testing.assert_allclose(got["teacher_log_probs"][mask],
                             np.asarray(online.log_probs)[mask], atol=1e-3, rtol=1e-3)


def _train(spec, batch, teacher, cached=None, num_steps=3, lr=1e-2):
  _, student = _student()
  b = {k: v for k, v in batch.items() if k != "ids"}
  sp = student.init(jax.random.key(0), b["waveform"], b["wave_paddings"], train=False)["params"]
  params = jax.device_get(steps.init_distill_params(student, spec, sp, 2, jax.random.key(1)))
  init = jax.tree_util.tree_map(np.array, params)  # copies: put_state donates the buffers
  tx = optax.adam(lr)
  layers = tuple(t for _, t in spec.layer_pairs)
  tfn = None if cached else (lambda p, w, m: teacher.forward(p, w, m, layers))
  step = steps.make_distill_train_step(student, tx, lambda s: lr, spec, teacher_fn=tfn)
  par = parallel.parallelize(step, parallel.make_mesh(jax.devices()[:1]), num_frozen=1)
  st = par.put_state(state_lib.create_state(params, tx, seed=0))
  if cached:
    b = {**b, **{k: v for k, v in cached.items() if k.startswith("teacher_")}}
  frozen = par.put_frozen(None if cached else teacher.params)
  hist = []
  for _ in range(num_steps):
    st, m = par(st, par.put_batch(b), frozen)
    hist.append(par.get_metrics(m))
  return init, jax.device_get(par.get_state(st).params), hist


def _max_change(a, b):
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def test_hidden_term_trains_student_and_projections_online_and_cached(setup):
  teacher, ds, batch, cache_dir = setup
  spec = steps.KdSpec(alpha=0.0, beta=0.0, gamma=1.0, frame_ratio=2, layer_pairs=PAIRS,
                      hidden_loss="l1_cos", teacher_dim=teacher.hidden_size)
  init, online, hist = _train(spec, batch, teacher)
  losses = [float(h["loss_hidden"]) for h in hist]
  assert all(np.isfinite(losses)) and all(h["update_ok"] for h in hist)
  assert losses[-1] < losses[0], losses
  for name in ("proj_2_2", "proj_1_1"):
    assert _max_change(init["projections"][name], online["projections"][name]) > 1e-4, name
  # alpha = beta = 0: the hidden term alone moved the student's encoder.
  assert _max_change(init["student"]["encoder"], online["student"]["encoder"]) > 1e-4

  cache = tc.open_cache(cache_dir, None, layers=LAYERS, num_frames=teacher.num_frames)
  # The run's layers in its pairs' order are those the cache stores.
  assert tuple(t for _, t in PAIRS) == cache.layers
  _, _, hist_c = _train(spec, batch, teacher, cached=cache.add_to_batch(batch))
  np.testing.assert_allclose([float(h["loss_hidden"]) for h in hist_c], losses, rtol=1e-2)
