"""Tiny randomly initialized CTC students for the export tests."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from configs import base
from distill_jax import text as text_lib
from distill_jax.models import build


def tiny_student(encoder: str = "conformer", seed: int = 0, **fields):
  """(model, params, tokenizer): a 2-layer, 32-wide student of `encoder` with `fields`."""
  c = base.get_config().model
  c.encoder = encoder
  small = dict(model_dim=32, num_layers=2, num_heads=4, subsampling_channels=8)
  c[encoder].update({k: v for k, v in small.items() if k in c[encoder]})
  if encoder == "conformer":
    c.conformer.conv_kernel = 5
  c[encoder].update(fields)
  tok = text_lib.CharTokenizer()
  model = build.build_student(c, tok.vocab_size)
  wav = jnp.zeros((1, 16000))
  params = model.init({"params": jax.random.key(seed)}, wav, wav, train=False)["params"]
  return model, params, tok


@pytest.fixture(scope="module")
def conformer_student():
  return tiny_student("conformer")
