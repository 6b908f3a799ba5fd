"""Config -> module. The one place that reads `config.model`."""

from __future__ import annotations

import math

import ml_collections

from distill_jax.audio import features as feats_lib
from distill_jax.models import encoders
from distill_jax.models.student import CtcStudent, SpecAugment, Vtlp


def build_encoder(cfg: ml_collections.ConfigDict):
  """`cfg.encoder` names a class in `encoders.ENCODERS`; `cfg[cfg.encoder]` holds its fields."""
  name = cfg.encoder
  if name not in encoders.ENCODERS:
    raise ValueError(f"config.model.encoder={name!r} is not one of {sorted(encoders.ENCODERS)}")
  return encoders.ENCODERS[name](**cfg[name].to_dict())


def build_student(cfg: ml_collections.ConfigDict, vocab_size: int) -> CtcStudent:
  if cfg.head != "ctc":
    raise ValueError(f"config.model.head={cfg.head!r}: only 'ctc' is built so far")
  specaug = SpecAugment(**cfg.specaug.to_dict()) if cfg.specaug_enabled else None
  vtlp = Vtlp(**cfg.vtlp.to_dict()) if cfg.vtlp_enabled else None
  return CtcStudent(encoder=build_encoder(cfg), vocab_size=vocab_size,
                    frontend=feats_lib.LogMelConfig.from_config(cfg.frontend),
                    specaug=specaug, vtlp=vtlp, head_dropout=cfg.head_dropout)


def output_frames(cfg: ml_collections.ConfigDict, num_samples: int) -> int:
  """Number of encoder frames the student emits for `num_samples` valid samples."""
  t = feats_lib.LogMelConfig.from_config(cfg.frontend).num_frames(num_samples)
  for _ in range(int(math.log2(cfg[cfg.encoder].subsampling))):
    t = -(-t // 2)
  return t
