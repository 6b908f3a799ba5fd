"""Per-family hard losses: CTC unchanged, joint CTC-attention and RNN-T (+ CTC) by parts."""

import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from distill_jax.losses import ctc as ctc_lib
from distill_jax.losses import seq2seq
from distill_jax.losses import transducer as rnnt
from distill_jax.models import build
from distill_jax.train import objectives

B, T, U, V = 2, 12, 3, 7


def _model(head):
  c = base.get_config()
  c.model.head = head
  c.model.aux_ctc = head != "ctc"
  return build.build_student(c.model, V)


def _batch():
  rng = np.random.default_rng(0)
  labels = jnp.array([[3, 4, 5], [6, 3, 0]])
  label_pad = jnp.array([[0, 0, 0], [0, 0, 1]], jnp.float32)
  pad = jnp.zeros((B, T)).at[1, 9:].set(1.0)
  out = dict(logits=jnp.asarray(rng.normal(size=(B, T, V)), jnp.float32), paddings=pad,
             decoder_logits=jnp.asarray(rng.normal(size=(B, U + 1, V)), jnp.float32),
             joint_logits=jnp.asarray(rng.normal(size=(B, T, U + 1, V)), jnp.float32))
  _, out["decoder_targets"], out["decoder_paddings"] = seq2seq.decoder_io(labels, label_pad,
                                                                          1, 2)
  return out, labels, label_pad


def test_ctc_family_is_the_ctc_loss():
  out, labels, label_pad = _batch()
  res = objectives.hard_loss(_model("ctc"), objectives.HeadLoss(), out, labels, label_pad)
  ref = ctc_lib.ctc_loss(out["logits"], out["paddings"], labels, label_pad)
  np.testing.assert_array_equal(res["per_example"], ref["per_example"])
  np.testing.assert_array_equal(res["weights"], ref["weights"])


@pytest.mark.parametrize("lam", [0.0, 0.3])
def test_attention_family_is_joint_ctc_attention(lam):
  out, labels, label_pad = _batch()
  spec = objectives.HeadLoss(ctc_weight=lam, label_smoothing=0.1)
  res = objectives.hard_loss(_model("attention"), spec, out, labels, label_pad)
  ce = seq2seq.label_smoothed_cross_entropy(out["decoder_logits"], out["decoder_targets"],
                                            out["decoder_paddings"], 0.1)["per_example"]
  ctc = ctc_lib.ctc_loss(out["logits"], out["paddings"], labels, label_pad)["per_example"]
  np.testing.assert_allclose(res["per_example"], lam * ctc + (1 - lam) * ce, rtol=1e-6)


@pytest.mark.parametrize("lam,fastemit", [(0.0, 0.0), (0.5, 0.01)])
def test_transducer_family_is_rnnt_plus_weighted_ctc(lam, fastemit):
  out, labels, label_pad = _batch()
  spec = objectives.HeadLoss(ctc_weight=lam, fastemit_lambda=fastemit)
  res = objectives.hard_loss(_model("transducer"), spec, out, labels, label_pad)
  nll = rnnt.rnnt_loss(out["joint_logits"], out["paddings"], labels, label_pad)
  ctc = ctc_lib.ctc_loss(out["logits"], out["paddings"], labels, label_pad)["per_example"]
  np.testing.assert_allclose(res["per_example"], nll + lam * ctc, rtol=1e-6)


def test_empty_transcripts_and_infeasible_ctc_get_zero_weight():
  out, labels, label_pad = _batch()
  label_pad = label_pad.at[1].set(1.0)             # row 1: empty transcript
  out["paddings"] = out["paddings"].at[0, 2:].set(1.0)  # row 0: 2 frames for 3 labels
  spec = objectives.HeadLoss(ctc_weight=0.3)
  res = objectives.hard_loss(_model("transducer"), spec, out, labels, label_pad)
  np.testing.assert_array_equal(res["weights"], [0.0, 0.0])
  assert int(res["num_infeasible"]) == 1
  res = objectives.hard_loss(_model("transducer"), objectives.HeadLoss(), out, labels,
                             label_pad)
  np.testing.assert_array_equal(res["weights"], [1.0, 0.0])  # RNN-T alone has no such limit
