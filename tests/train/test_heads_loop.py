"""Attention and transducer students through the real training and distillation loops on the
tiny corpus, then decoded from their checkpoints (greedy and beam)."""

import json
import os

import numpy as np
import pytest

from distill_jax.jobs import evaluate
from distill_jax import text as text_lib
from distill_jax.convert import hf_wav2vec2
from distill_jax.models import wav2vec2 as w2v
from distill_jax.train import loop
from tests.train import tiny_config

HEADS = {
    "attention": dict(head="attention", aux_ctc=True, ctc_weight=0.3,
                      attention_decoder=dict(kind="lstm", attention="additive", dim=16,
                                             num_heads=2)),
    "transducer": dict(head="transducer", aux_ctc=True, ctc_weight=0.1,
                       transducer=dict(predictor="lstm", pred_dim=16, joint_dim=16)),
}


def _config(tiny_corpus, head, steps=8, **overrides):
  c = tiny_config.get_config(tiny_corpus)
  spec = dict(HEADS[head])
  for key, value in dict(spec, **overrides).items():
    if isinstance(value, dict):
      c.model[key].update(value)
    else:
      c.model[key] = value
  c.train.update(dict(num_steps=steps, log_every=4, eval_every=steps, checkpoint_every=4))
  c.eval.update(dict(beam_size=3, max_length_ratio=1.0, max_symbols_per_frame=2))
  return c


def _train_rows(workdir):
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  return [r for r in rows if "train/loss" in r], rows


@pytest.mark.slow  # ~1-2 min each on 2 cores; the default run keeps the unit tests
@pytest.mark.parametrize("head", sorted(HEADS))
def test_student_trains_through_the_loop_and_decodes(tiny_corpus, tmp_path, head):
  config = _config(tiny_corpus, head)
  workdir = str(tmp_path / head)
  summary = loop.train_and_evaluate(config, workdir)
  assert summary["step"] == 8 and summary["skipped_updates"] == 0
  train, rows = _train_rows(workdir)
  losses = [r["train/loss"] for r in train]
  assert len(losses) == 2 and all(np.isfinite(losses)) and losses[-1] < losses[0]
  assert any("dev/wer" in r for r in rows)
  for decoder in ("greedy", "beam"):
    config.eval.decoder = decoder
    res = evaluate.evaluate_run(workdir, config=config, which="latest", splits=["test"])["test"]
    assert res["utterances"] == 8 and res["decoder"] == decoder and res["rtf"] > 0
    suffix = "" if decoder == "greedy" else "_beam"
    lines = open(os.path.join(workdir, "eval", f"test_step8{suffix}",
                              "hypotheses.tsv")).read().splitlines()
    assert len(lines) == 9
  config.eval.decoder = "beam_lm"
  with pytest.raises(ValueError, match="'greedy' or 'beam'"):
    evaluate.evaluate_run(workdir, config=config, which="latest", splits=["test"])


@pytest.fixture(scope="module")
def teacher_folder(tmp_path_factory):
  cfg = w2v.Wav2Vec2Config(vocab_size=32, hidden_size=24, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=32, conv_dim=(8,) * 7,
                           num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                           feat_extract_norm="layer", do_stable_layer_norm=True,
                           conv_bias=True)
  out = str(tmp_path_factory.mktemp("teacher"))
  return hf_wav2vec2.export_hf_folder(cfg, w2v.init_params(cfg, seed=3),
                                      text_lib.CharTokenizer(), out)


@pytest.mark.slow
@pytest.mark.parametrize("head,hard_labels,overrides", [
    # Sequence-level KD on teacher transcripts + frame KL (aux CTC) + encoder hidden states.
    ("attention", "teacher", dict(attention_decoder=dict(kind="transformer", attention="dot",
                                                         dim=16, num_heads=2, num_layers=1))),
    ("transducer", "ground_truth", dict(transducer=dict(predictor="stateless", pred_dim=16,
                                                        joint_dim=16))),
])
def test_distillation_runs_for_the_new_heads(tiny_corpus, teacher_folder, tmp_path, head,
                                             hard_labels, overrides):
  config = _config(tiny_corpus, head, steps=4, **overrides)
  config.distill.update(dict(teacher=teacher_folder, alpha=0.5, beta=1.0, gamma=0.5,
                             hard_labels=hard_labels, layer_mapping="last_k", layer_k=1))
  workdir = str(tmp_path / f"kd_{head}")
  summary = loop.train_and_evaluate(config, workdir)
  assert summary["step"] == 4 and summary["skipped_updates"] == 0
  train, _ = _train_rows(workdir)
  for key in ("train/loss_hard", "train/loss_kl", "train/loss_hidden"):
    assert all(np.isfinite(r[key]) for r in train), key
  assert all(r["train/loss_kl"] > 0 and r["train/loss_hidden"] > 0 for r in train)
  res = evaluate.evaluate_run(workdir, config=config, which="latest", splits=["test"])["test"]
  assert res["utterances"] == 8


def test_frame_kl_without_an_auxiliary_ctc_head_is_an_error(tiny_corpus, teacher_folder,
                                                             tmp_path):
  config = _config(tiny_corpus, "transducer", steps=2, aux_ctc=False, ctc_weight=0.0)
  config.distill.update(dict(teacher=teacher_folder, beta=1.0))
  with pytest.raises(ValueError, match="aux_ctc=True"):
    loop.train_and_evaluate(config, str(tmp_path / "no_aux"))
