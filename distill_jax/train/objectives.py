"""The hard (supervised) loss of each student family, shared by the train and distill steps.

  ctc:        CTC on the encoder (losses/ctc.py).
  attention:  (1 - lambda) label-smoothed CE of the decoder + lambda CTC of the auxiliary head
              (joint CTC-attention; lambda = config.model.ctc_weight, 0 = CE alone).
  transducer: RNN-T NLL (losses/transducer.py, optional FastEmit) + lambda CTC of the auxiliary
              head when lambda > 0.

Every family returns per-example sums and weights so the steps normalize them the same way (by
the global count of target tokens). Examples whose labels cannot fit their frames under CTC
(only when a CTC term is on) and empty transcripts get weight 0 and are counted.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from distill_jax.losses import ctc as ctc_loss_lib
from distill_jax.losses import seq2seq
from distill_jax.losses import transducer as rnnt
from distill_jax.models import student as student_lib


@dataclasses.dataclass(frozen=True)
class HeadLoss:
  """Hard-loss settings from `config.model` (see module docstring)."""
  ctc_weight: float = 0.0
  label_smoothing: float = 0.0
  fastemit_lambda: float = 0.0

  @classmethod
  def from_config(cls, model_cfg) -> "HeadLoss":
    return cls(ctc_weight=float(model_cfg.ctc_weight),
               label_smoothing=float(model_cfg.label_smoothing),
               fastemit_lambda=float(model_cfg.fastemit_lambda))


def head_kind(model: nn.Module) -> str:
  if isinstance(model, student_lib.AttentionStudent):
    return "attention"
  if isinstance(model, student_lib.TransducerStudent):
    return "transducer"
  return "ctc"


def apply_student(model: nn.Module, params: Any, waveform: jax.Array, wave_paddings: jax.Array,
                  labels: jax.Array, label_paddings: jax.Array, *, train: bool,
                  rngs: dict | None = None) -> dict[str, jax.Array]:
  """The student's outputs; label-conditioned heads read the labels (teacher forcing)."""
  if head_kind(model) == "ctc":
    return model.apply({"params": params}, waveform, wave_paddings, train=train, rngs=rngs)
  return model.apply({"params": params}, waveform, wave_paddings, labels, label_paddings,
                     train=train, rngs=rngs)


def hard_loss(model: nn.Module, spec: HeadLoss, out: dict[str, jax.Array], labels: jax.Array,
              label_paddings: jax.Array, blank_id: int = 0) -> dict[str, jax.Array]:
  """dict(per_example [B] (0 where masked), weights [B], num_infeasible, terms {name: [B]})."""
  kind = head_kind(model)
  if kind == "ctc":
    res = ctc_loss_lib.ctc_loss(out["logits"], out["paddings"], labels, label_paddings,
                                blank_id)
    return dict(per_example=res["per_example"], weights=res["weights"],
                num_infeasible=res["num_infeasible"], terms={})
  nonempty = jnp.sum(1.0 - label_paddings, axis=1) > 0
  lam = spec.ctc_weight
  terms = {}
  if kind == "attention":
    ce = seq2seq.label_smoothed_cross_entropy(out["decoder_logits"], out["decoder_targets"],
                                              out["decoder_paddings"], spec.label_smoothing)
    main = ce["per_example"]
    terms["attention"] = main
  else:
    logits = out["joint_logits"]
    if logits.shape[2] != labels.shape[1] + 1:
      raise ValueError(f"joint logits {logits.shape} do not match labels {labels.shape}")
    main = rnnt.rnnt_loss(logits, out["paddings"], labels, label_paddings, blank_id,
                          spec.fastemit_lambda)
    terms["transducer"] = main
  weights = nonempty
  infeasible = jnp.zeros((), jnp.int32)
  if lam > 0:
    if "logits" not in out:
      raise ValueError(f"config.model.ctc_weight={lam} needs config.model.aux_ctc=True")
    ctc = ctc_loss_lib.ctc_loss(out["logits"], out["paddings"], labels, label_paddings,
                                blank_id)
    weights = weights & (ctc["weights"] > 0)
    infeasible = ctc["num_infeasible"]
    terms["ctc"] = ctc["per_example"]
    if kind == "attention":
      main = seq2seq.joint_ctc_attention(ctc["per_example"], main, lam)
    else:
      main = main + lam * ctc["per_example"]
  weights = weights.astype(jnp.float32)
  return dict(per_example=jnp.where(weights > 0, main, 0.0), weights=weights,
              num_infeasible=infeasible,
              terms={k: jnp.where(weights > 0, v, 0.0) for k, v in terms.items()})
