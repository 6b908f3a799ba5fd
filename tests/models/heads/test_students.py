"""The three student families built from configs: shared encoder, outputs, sizes, errors."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from distill_jax.models import build
from distill_jax.train import state as state_lib


def _config(head, **model):
  c = base.get_config()
  c.model.specaug_enabled = False
  c.model.conformer.update(dict(model_dim=16, num_layers=1, num_heads=2, conv_kernel=3,
                                subsampling_channels=4, dropout_rate=0.0))
  c.model.attention_decoder.update(dict(dim=16, num_heads=2))
  c.model.transducer.update(dict(pred_dim=16, joint_dim=16))
  c.model.head = head
  c.model.update(model)
  return c


def _inputs():
  wave = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16000)).astype(np.float32))
  pad = jnp.zeros((2, 16000)).at[1, 9600:].set(1.0)
  labels = jnp.array([[5, 6, 7, 0], [8, 9, 0, 0]])
  label_pad = jnp.array([[0, 0, 0, 1], [0, 0, 1, 1]], jnp.float32)
  return wave, pad, labels, label_pad


@pytest.mark.parametrize("head", ["attention", "transducer"])
def test_label_conditioned_students_share_the_ctc_students_encoder(head):
  wave, pad, labels, label_pad = _inputs()
  ctc = build.build_student(_config("ctc").model, 32)
  other = build.build_student(_config(head, aux_ctc=True).model, 32)
  p_ctc = ctc.init(jax.random.key(0), wave, pad, train=False)["params"]
  p = other.init(jax.random.key(0), wave, pad, train=False)["params"]
  assert set(p_ctc) == {"encoder", "ctc_head"} and {"encoder", "ctc_head"} <= set(p)
  # Same encoder params -> same encoder outputs and hidden states.
  p = dict(p, encoder=p_ctc["encoder"], ctc_head=p_ctc["ctc_head"])
  a = ctc.apply({"params": p_ctc}, wave, pad, train=False)
  b = other.apply({"params": p}, wave, pad, labels, label_pad, train=False)
  for key in ("logits", "paddings", "hidden_states", "encoder_outputs"):
    np.testing.assert_allclose(a[key], b[key], atol=1e-6)
  t = build.output_frames(_config(head).model, 16000)
  if head == "attention":
    assert b["decoder_logits"].shape == (2, 5, 32)
  else:
    assert b["joint_logits"].shape == (2, t, 5, 32)


def test_without_aux_ctc_there_are_no_ctc_logits():
  wave, pad, labels, label_pad = _inputs()
  model = build.build_student(_config("transducer").model, 32)
  params = model.init(jax.random.key(0), wave, pad, train=False)["params"]
  assert "ctc_head" not in params
  assert "logits" not in model.apply({"params": params}, wave, pad, labels, label_pad,
                                     train=False)


def test_config_errors_name_the_field():
  with pytest.raises(ValueError, match="config.model.head='rnn'"):
    build.build_student(_config("rnn").model, 32)
  with pytest.raises(ValueError, match="aux_ctc"):
    build.build_student(_config("attention", ctc_weight=0.3).model, 32)
  c = _config("attention")
  c.model.attention_decoder.kind = "gru"
  with pytest.raises(ValueError, match="attention_decoder.kind='gru'"):
    build.build_student(c.model, 32)


def test_demo_families_have_similar_sizes():
  counts = {}
  for name in ("demo_ctc", "demo_attention", "demo_transducer"):
    c = importlib.import_module(f"configs.{name}").get_config()
    model = build.build_student(c.model, 32)
    wav = jnp.zeros((1, 16000))
    shapes = jax.eval_shape(lambda m=model: m.init(jax.random.key(0), wav, wav,
                                                   train=False))["params"]
    counts[name] = state_lib.count_params(shapes)
  ref = counts["demo_ctc"]
  for name, n in counts.items():
    assert abs(n - ref) / ref < 0.06, counts
