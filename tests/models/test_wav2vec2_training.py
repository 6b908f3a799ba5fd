"""Training a wav2vec2 CTC model from scratch with the project's loop (the demo teacher).

`config.model.encoder='wav2vec2'` builds `Wav2Vec2Trainee`; it trains on the tiny corpus
through `loop.train_and_evaluate`, evaluates through `evaluate_checkpoint` (launch.eval), exports
to a Hugging Face folder that transformers loads with the same logits (1e-4 absolute, float32,
valid frames, through `Wav2Vec2Processor` on raw audio), and loads as a KD teacher.
"""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import demo, demo_teacher
from distill_jax.models.wav2vec2_trainee import Wav2Vec2Trainee
from distill_jax.train import runs
from distill_jax.jobs import evaluate
from distill_jax import text as text_lib
from distill_jax.audio import io as audio_io
from distill_jax.convert import hf_wav2vec2
from distill_jax.data import manifest as manifest_lib
from distill_jax.models import build
from distill_jax.models import wav2vec2 as w2v
from distill_jax.train import loop
from distill_jax.train import state as state_lib
from distill_jax.train import teacher as teacher_lib
from distill_jax.train import warm_start
from tests.train import tiny_config

ATOL = 1e-4  # float32 logits, absolute, valid frames.

TINY_W2V = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=64, conv_dim=(16, 16, 16, 16), conv_stride=(5, 4, 4, 4),
                conv_kernel=(10, 8, 4, 4), conv_bias=True, num_conv_pos_embeddings=16,
                num_conv_pos_embedding_groups=4, feat_extract_norm="layer",
                do_stable_layer_norm=True, hidden_dropout=0.0, activation_dropout=0.0,
                attention_dropout=0.0, final_dropout=0.0, mask_time_prob=0.05,
                mask_time_length=5)


def _model_config(**kw) -> ml_collections.ConfigDict:
  c = tiny_config.get_config("unused").model
  c.encoder = "wav2vec2"
  c.specaug_enabled = True  # wav2vec2 time masking
  c.wav2vec2 = ml_collections.ConfigDict({**TINY_W2V, **kw})
  return c


def _expected_params(w: dict, vocab: int) -> int:
  """Hand count of a stable-layer-norm wav2vec2 CTC model with conv biases."""
  n, c_in = 0, 1
  for c, k in zip(w["conv_dim"], w["conv_kernel"]):
    n += c * c_in * k + c + 2 * c  # conv weight + bias, layer norm
    c_in = c
  d, f = w["hidden_size"], w["intermediate_size"]
  n += 2 * c_in + c_in * d + d  # feature projection (layer norm, dense)
  n += d  # masked_spec_embed (mask_time_prob > 0)
  k, g = w["num_conv_pos_embeddings"], w["num_conv_pos_embedding_groups"]
  n += k + k * (d // g) * d + d  # positional conv: weight_g, weight_v, bias
  n += 2 * d  # encoder layer norm
  n += w["num_hidden_layers"] * (4 * (d * d + d) + 2 * 2 * d + d * f + f + f * d + d)
  return n + d * vocab + vocab


def _count(model) -> int:
  wav = jnp.zeros((1, 16000), jnp.float32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), wav, wav, train=False))
  return state_lib.count_params(shapes["params"])


def test_builds_from_config_with_the_computed_param_count():
  cfg = _model_config()
  model = build.build_student(cfg, 32)
  assert isinstance(model, Wav2Vec2Trainee) and model.time_masking
  assert model.config.vocab_size == 32 and model.config.frame_rate_samples == 320
  assert _count(model) == _expected_params(TINY_W2V, 32)
  # The params tree is Wav2Vec2ForCTC's, so the converter exports it unchanged.
  wav = jnp.zeros((1, 16000), jnp.float32)
  tree = jax.eval_shape(lambda: model.init(jax.random.key(0), wav, wav, train=False))["params"]
  assert (jax.tree_util.tree_structure(tree)
          == jax.tree_util.tree_structure(w2v.param_shapes(model.config)))
  assert build.output_frames(cfg, 16000) == w2v.num_frames(model.config, 16000) == 49


def test_demo_teacher_is_at_least_four_times_the_default_student():
  student = build.build_student(demo.get_config().model, 32)
  teacher_cfg = demo_teacher.get_config()
  teacher = build.build_student(teacher_cfg.model, 32)
  n_s, n_t = _count(student), _count(teacher)
  assert n_t == _expected_params(teacher_cfg.model.wav2vec2.to_dict(), 32)
  assert n_t >= 4 * n_s, (n_t, n_s)
  assert teacher.config.frame_rate_samples == 320  # 20 ms frames, as the hub teacher
  fast = build.build_student(demo_teacher.get_config("40ms").model, 32)
  assert fast.config.frame_rate_samples == 640 and _count(fast) >= 4 * n_s
  with pytest.raises(ValueError, match="only variant"):
    demo_teacher.get_config("30ms")


@pytest.mark.parametrize("change,match", [
    (dict(vtlp_enabled=True), "vtlp_enabled"),
    (dict(head="transducer"), "CTC head only"),
])
def test_config_errors_name_the_field(change, match):
  cfg = _model_config()
  cfg.update(change)
  with pytest.raises(ValueError, match=match):
    build.build_student(cfg, 32)


def test_wrong_vocab_and_unknown_field_are_named():
  with pytest.raises(ValueError, match="vocab_size=40 but the tokenizer has 32"):
    build.build_student(_model_config(vocab_size=40), 32)
  with pytest.raises(ValueError, match="config.model.wav2vec2: .*hiden_size"):
    build.build_student(_model_config(hiden_size=8), 32)


def test_time_mask_covers_about_prob_and_never_padding():
  pad = np.zeros((400, 300), np.float32)
  pad[::2, 200:] = 1.0
  mask = np.asarray(w2v.time_mask(jax.random.key(0), jnp.asarray(pad), 0.2, 10, 2))
  assert not np.any(mask & (pad > 0.5))
  # Spans overlap, so the covered share is below prob (~1 - exp(-prob) = 0.18 for prob 0.2).
  assert 0.14 < mask[1::2].mean() < 0.2 and 0.14 < mask[::2, :200].mean() < 0.2
  # min_masks spans even for short utterances, none for those shorter than a span.
  short = np.ones((2, 50), np.float32)
  short[0, :12], short[1, :8] = 0.0, 0.0
  mask = np.asarray(w2v.time_mask(jax.random.key(1), jnp.asarray(short), 0.01, 10, 2))
  assert mask[0].sum() == 10 and mask[1].sum() == 0  # 12 // 10 = 1 span; 8 < 10: none


def test_trainee_is_wav2vec2_for_ctc_on_normalized_audio():
  """Eval mode: the trainee = Wav2Vec2ForCTC on the processor-normalized waveform; training
  with masking changes the output only through the masked frames' inputs."""
  model = build.build_student(_model_config(), 32)
  params = jax.tree_util.tree_map(jnp.asarray, w2v.init_params(model.config, seed=1))
  rng = np.random.RandomState(0)
  x = (0.3 * rng.randn(2, 12000)).astype(np.float32)
  pad = np.zeros_like(x)
  pad[1, 7000:] = 1.0
  out = model.apply({"params": params}, x, pad, train=False)
  ref = w2v.Wav2Vec2ForCTC(model.config).apply({"params": params},
                                               w2v.normalize_waveform(x, pad), pad)
  np.testing.assert_allclose(out["logits"], ref["logits"], atol=1e-6)
  np.testing.assert_array_equal(out["paddings"], ref["frame_paddings"])
  assert out["hidden_states"].shape == (3, 2, 37, 32)
  rngs = {"dropout": jax.random.key(2), "specaug": jax.random.key(3)}
  masked = model.apply({"params": params}, x, pad, train=True, rngs=rngs)
  first = np.asarray(masked["hidden_states"][0] != out["hidden_states"][0]).any(-1)
  assert 0 < first.sum() < first.size


def test_speed_perturbation_trains_on_resampled_audio():
  cfg = _model_config()
  cfg.speed_perturb_enabled = True
  cfg.speed_perturb.update(dict(min_factor=1.2, max_factor=1.2))
  model = build.build_student(cfg, 32)
  assert model.speed == (1.2, 1.2)
  params = jax.tree_util.tree_map(jnp.asarray, w2v.init_params(model.config, seed=1))
  x = (0.3 * np.random.RandomState(0).randn(1, 12000)).astype(np.float32)
  pad = np.zeros_like(x)
  # Training reads the audio played 1.2x faster: 12000 samples -> 10000 (31 of 37 frames).
  # Evaluation (train=False) is the plain trainee: test_trainee_is_wav2vec2_for_ctc_... above.
  fast = model.apply({"params": params}, x, pad, train=True,
                     rngs={"specaug": jax.random.key(3), "augment": jax.random.key(4)})
  expect = w2v.num_frames(model.config, 10000)
  assert expect < w2v.num_frames(model.config, 12000)
  assert int((1 - np.asarray(fast["paddings"][0])).sum()) == expect
  student = demo.get_config().model
  student.speed_perturb_enabled = True
  with pytest.raises(ValueError, match="speed_perturb_enabled.*VTLP"):
    build.build_student(student, 32)
  cfg.speed_perturb.min_factor = 0.0
  with pytest.raises(ValueError, match="min_factor <= max_factor"):
    build.build_student(cfg, 32)


def test_warm_start_from_a_hugging_face_folder_takes_its_weights(tmp_path):
  # `train.init_from=FOLDER` fine-tunes an exported teacher (or a downloaded hub checkpoint).
  config = tiny_config.get_config("unused")
  config.model = _model_config()
  tokenizer = text_lib.CharTokenizer()
  cfg = build.wav2vec2_config(config.model, tokenizer.vocab_size)
  weights = w2v.init_params(cfg, seed=5)
  folder = hf_wav2vec2.export_hf_folder(cfg, weights, tokenizer, str(tmp_path / "hf"))
  zeros = jax.tree.map(np.zeros_like, weights)
  loaded = warm_start.warm_start_params(config, folder, zeros, tokenizer)
  assert jax.tree.structure(loaded) == jax.tree.structure(weights)
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(weights)):
    np.testing.assert_array_equal(a, b)
  # Regularization and masking may differ (warm_start.HF_WARM_START_FREE); the architecture may not.
  config.model.wav2vec2.hidden_dropout = 0.1
  config.model.wav2vec2.mask_time_prob = 0.2
  warm_start.warm_start_params(config, folder, zeros, tokenizer)
  config.model.wav2vec2.hidden_act = "relu"
  with pytest.raises(ValueError, match=r"differs from config.model.wav2vec2 in hidden_act "
                                       r"\('gelu' there, 'relu' here\)"):
    warm_start.warm_start_params(config, folder, zeros, tokenizer)
  config.model.wav2vec2.hidden_act = "gelu"
  other = text_lib.CharTokenizer({**tokenizer.vocab, "@": tokenizer.vocab_size})
  with pytest.raises(ValueError, match="vocab.json .* is not this run's vocabulary"):
    warm_start.warm_start_params(config, folder, zeros, other)
  with pytest.raises(ValueError, match=r"first \['lm_head'\]\['bias'\]: \(32,\) there, "
                                       r"\(33,\) here"):
    bigger = jax.tree.map(np.zeros_like, w2v.init_params(
        build.wav2vec2_config(config.model, 33)))
    warm_start.check_params_fit(folder, weights, bigger)
  student = tiny_config.get_config("unused")
  with pytest.raises(ValueError, match="only a wav2vec2 model"):
    warm_start.warm_start_params(student, folder, zeros, tokenizer)


# --- the loop, evaluation, export, KD -------------------------------------------------------------

def _train_config(corpus):
  c = tiny_config.get_config(corpus)
  c.model = _model_config()
  c.train.update(dict(num_steps=30, warmup_steps=5, lr=3e-3, log_every=5, eval_every=30,
                      checkpoint_every=10))
  return c


@pytest.fixture(scope="module")
def trained(tiny_corpus, tmp_path_factory):
  config = _train_config(tiny_corpus)
  workdir = str(tmp_path_factory.mktemp("w2v_run"))
  summary = loop.train_and_evaluate(config, workdir)
  return config, workdir, summary


@pytest.mark.slow  # trains 30 steps through the loop (module fixture)
def test_loop_trains_it_and_the_loss_decreases(trained):
  config, workdir, summary = trained
  assert summary["step"] == 30 and summary["skipped_updates"] == 0
  assert summary["num_params"] == _expected_params(config.model.wav2vec2.to_dict(), 32)
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  losses = [r["train/loss"] for r in rows if "train/loss" in r]
  assert len(losses) == 6 and all(np.isfinite(losses))
  assert losses[-1] < 0.7 * losses[0], losses
  assert any("dev/wer" in r for r in rows)


@pytest.mark.slow  # trains 30 steps through the loop (module fixture)
def test_eval_restores_it(trained):
  config, workdir, summary = trained
  res = evaluate.evaluate_run(workdir, config=config, which="latest", splits=["test"])["test"]
  assert res["utterances"] == 8 and res["step"] == 30
  # The restored model is the trained one: on dev, the scores of the loop's last evaluation.
  dev = evaluate.evaluate_run(workdir, config=config, which="latest", splits=["dev"])["dev"]
  assert dev["utterances"] == summary["dev"]["utterances"]
  assert (dev["wer"], dev["cer"]) == pytest.approx((summary["dev"]["wer"], summary["dev"]["cer"]))


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
  config, workdir, _ = trained
  out = str(tmp_path_factory.mktemp("exported") / "demo_hf")
  meta = hf_wav2vec2.export_checkpoint(config, workdir, "latest", out)
  return out, meta


def _test_audio(config, n=3):
  utts = manifest_lib.read_manifest(config.data.test)[:n]
  return [audio_io.load_audio(u.path) for u in utts]


def _padded(waves):
  s = max(len(w) for w in waves)
  x = np.zeros((len(waves), s), np.float32)
  pad = np.ones_like(x)
  for i, w in enumerate(waves):
    x[i, :len(w)], pad[i, :len(w)] = w, 0.0
  return x, pad


@pytest.mark.slow  # trains 30 steps through the loop (module fixture)
def test_export_writes_a_folder_with_provenance(trained, exported):
  config, workdir, _ = trained
  out, meta = exported
  assert {"config.json", "model.safetensors", "vocab.json", "preprocessor_config.json",
          "tokenizer_config.json", hf_wav2vec2.EXPORT_META} <= set(os.listdir(out))
  assert meta["step"] == 30 and meta["workdir"] == os.path.abspath(workdir)
  assert meta["num_params"] == _expected_params(config.model.wav2vec2.to_dict(), 32)
  with pytest.raises(FileExistsError, match="model.safetensors exists"):
    hf_wav2vec2.export_checkpoint(config, workdir, "latest", out)
  student = tiny_config.get_config(config.data.train.rsplit("/", 1)[0])
  with pytest.raises(ValueError, match="only a wav2vec2 model"):
    hf_wav2vec2.export_checkpoint(student, workdir, "latest", out + "_x")


@pytest.mark.slow  # trains 30 steps through the loop (module fixture)
@pytest.mark.torch
def test_exported_folder_loads_in_transformers_with_the_same_logits(trained, exported):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  config, workdir, _ = trained
  out, _ = exported
  model, params, _, _ = runs.restore_student(workdir, "latest")
  waves = _test_audio(config)
  x, pad = _padded(waves)
  ours = model.apply({"params": params}, x, pad, train=False)
  processor = transformers.Wav2Vec2Processor.from_pretrained(out)
  hf_model = transformers.Wav2Vec2ForCTC.from_pretrained(out).eval()
  inputs = processor(waves, sampling_rate=16000, padding=True, return_tensors="pt")
  assert "attention_mask" in inputs
  with torch.inference_mode():
    ref = hf_model(inputs["input_values"], attention_mask=inputs["attention_mask"]).logits.numpy()
  valid = np.asarray(ours["paddings"]) < 0.5
  assert ref.shape == ours["logits"].shape
  assert float(np.abs(np.asarray(ours["logits"]) - ref)[valid].max()) < ATOL
  # The tokenizer round-trips the vocabulary and the greedy transcript.
  ids = ref[0].argmax(-1)[valid[0]]
  assert isinstance(processor.decode(ids), str)
  assert processor.tokenizer.get_vocab() == json.load(open(os.path.join(out, "vocab.json")))


@pytest.mark.slow  # trains 30 steps through the loop (module fixture)
def test_exported_folder_loads_as_kd_teacher(trained, exported):
  config, workdir, _ = trained
  out, _ = exported
  model, params, tokenizer, _ = runs.restore_student(workdir, "latest")
  student = tiny_config.get_config(config.data.train.rsplit("/", 1)[0])
  student.distill.teacher = out
  teacher = teacher_lib.load_teacher(student, tokenizer)
  assert teacher.config == model.config
  assert teacher_lib.kd_spec(student, teacher).frame_ratio == 2  # 40 ms student, 20 ms teacher
  x, pad = _padded(_test_audio(config))
  t_out = teacher.fn(teacher.params, x, pad)
  ours = model.apply({"params": params}, x, pad, train=False)
  valid = np.asarray(ours["paddings"]) < 0.5
  np.testing.assert_array_equal(t_out["paddings"], ours["paddings"])
  diff = np.abs(np.asarray(t_out["log_probs"]) - np.asarray(jax.nn.log_softmax(ours["logits"])))
  assert float(diff[valid].max()) < 1e-5
