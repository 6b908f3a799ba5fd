"""Distillation runs end to end on the tiny corpus: online and cached teacher, eval, errors."""

import json
import os

import jax
import numpy as np
import pytest

from distill_jax.train import runs, splits
from distill_jax.jobs import evaluate
from distill_jax import text as text_lib
from distill_jax.convert import hf_wav2vec2
from distill_jax.data import teacher_cache
from distill_jax.models import wav2vec2 as w2v
from distill_jax.train import loop
from distill_jax.train import teacher as teacher_lib
from tests.train import tiny_config


def _teacher_config(vocab_size=32):
  return w2v.Wav2Vec2Config(vocab_size=vocab_size, hidden_size=24, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=32, conv_dim=(8,) * 7,
                            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                            feat_extract_norm="layer", do_stable_layer_norm=True,
                            conv_bias=True)


@pytest.fixture(scope="module")
def teacher_folder(tmp_path_factory):
  """A tiny random wav2vec2 CTC teacher saved as a Hugging Face folder."""
  cfg = _teacher_config()
  out = str(tmp_path_factory.mktemp("teacher"))
  return hf_wav2vec2.export_hf_folder(cfg, w2v.init_params(cfg, seed=3),
                                      text_lib.CharTokenizer(), out)


def _config(tiny_corpus, teacher, cache=""):
  c = tiny_config.get_config(tiny_corpus)
  c.distill.update(dict(teacher=teacher, cache=cache, alpha=0.5, beta=1.0, gamma=0.5,
                        layer_mapping="last_k", layer_k=1))
  c.train.update(dict(num_steps=6, eval_every=6, checkpoint_every=3))
  return c


@pytest.mark.slow  # 90 s; tests/viz trains tiny distill runs in the default suite
def test_distill_run_trains_evaluates_and_records_the_teacher(tiny_corpus, teacher_folder,
                                                              tmp_path):
  config = _config(tiny_corpus, teacher_folder)
  workdir = str(tmp_path / "kd")
  summary = loop.train_and_evaluate(config, workdir)
  assert summary["step"] == 6 and summary["skipped_updates"] == 0
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  logged = set().union(*rows)
  assert {"train/loss_hard", "train/loss_kl", "train/loss_hidden"} <= logged
  # Evaluation restores the student alone (projections are dropped).
  res = evaluate.evaluate_run(workdir, config=config, which="latest", splits=["test"])["test"]
  assert res["utterances"] == 8
  _, params, _, _ = runs.restore_student(workdir, "latest")
  assert "ctc_head" in params and "proj_2_2" not in str(jax.tree_util.tree_structure(params))

  # Resuming with another teacher is an error that names both.
  other = str(tmp_path / "other_teacher")
  cfg = _teacher_config()
  hf_wav2vec2.export_hf_folder(cfg, w2v.init_params(cfg, seed=4), text_lib.CharTokenizer(),
                               other)
  config.distill.teacher = other
  config.train.num_steps = 9
  with pytest.raises(ValueError, match="trained with teacher .*teacher_folder|trained with "
                                       "teacher"):
    loop.train_and_evaluate(config, workdir)


@pytest.mark.slow  # 140 s; the step-level equivalence (test_distill_step.py) stays in CI
def test_cached_teacher_trains_like_the_online_one(tiny_corpus, teacher_folder, tmp_path):
  config = _config(tiny_corpus, teacher_folder)
  tokenizer = splits.load_tokenizer(config)
  teacher = teacher_lib.load_teacher(config, tokenizer)
  train, _ = splits.load_split(config, config.data.train, "train", tokenizer, progress=False)
  cache = str(tmp_path / "cache")
  teacher_cache.build_cache(teacher.config, teacher.params, train, cache, layers=teacher.layers,
                            tokenizer=tokenizer, progress=False)
  online = str(tmp_path / "online")
  loop.train_and_evaluate(config, online)
  config.distill.cache = cache
  cached = str(tmp_path / "cached")
  loop.train_and_evaluate(config, cached)
  rows = lambda w: [json.loads(l) for l in open(os.path.join(w, "metrics.jsonl"))
                    if "train/loss_kl" in l]
  for a, b in zip(rows(online), rows(cached)):
    # The cache stores float16 log-probs and hidden states: losses agree to float16 precision.
    np.testing.assert_allclose(a["train/loss_kl"], b["train/loss_kl"], rtol=1e-2)
    np.testing.assert_allclose(a["train/loss_hidden"], b["train/loss_hidden"], rtol=1e-2)


def test_teacher_errors_are_named(tiny_corpus, tmp_path):
  cfg = _teacher_config(vocab_size=30)
  vocab = {t: i for t, i in text_lib.CharTokenizer().vocab.items() if i < 30}
  folder = hf_wav2vec2.export_hf_folder(cfg, w2v.init_params(cfg, seed=5),
                                        text_lib.CharTokenizer(vocab), str(tmp_path / "t30"))
  config = _config(tiny_corpus, folder)
  with pytest.raises(ValueError, match="teacher .*t30"):
    teacher_lib.load_teacher(config, splits.load_tokenizer(config))
  config.distill.teacher = str(tmp_path / "missing")
  with pytest.raises(FileNotFoundError, match="config.distill.teacher"):
    teacher_lib.load_teacher(config, splits.load_tokenizer(config))
