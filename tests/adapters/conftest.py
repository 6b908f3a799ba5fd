"""Tiny student (Conformer) and teacher (wav2vec2) models shared by the adapter tests."""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.adapters import lora
from distill_jax.models import encoders, student
from distill_jax.models import wav2vec2 as w2v

# Attention q/k/v/out (3-D DenseGeneral kernels in the student) and the feed-forward layers.
STUDENT_PATTERNS = [r".*attention/(query|key|value|out)/kernel", r".*ff[12]/(in|out)/kernel"]
TEACHER_PATTERNS = [r".*attention/(q|k|v|out)_proj/kernel",
                    r".*feed_forward/(intermediate|output)_dense/kernel"]


def _perturb(adapters, seed: int, scale: float = 0.05):
  """Adapters with non-zero B (and shifted A), so that they change the output."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: x + scale * rng.standard_normal(x.shape, np.float32), adapters)


@pytest.fixture(name="perturb", scope="session")
def perturb_fixture():
  """`perturb(adapters, seed)`: the adapters with non-zero B, so that they matter."""
  return _perturb


def _audio(batch: int, samples: int, seed: int):
  rng = np.random.RandomState(seed)
  x = (0.5 * rng.randn(batch, samples)).astype(np.float32)
  pad = np.zeros_like(x)
  for i in range(1, batch):
    n = samples - 700 * i
    pad[i, n:] = 1.0
    x[i, n:] = 0.0
  return jnp.asarray(x), jnp.asarray(pad)


@pytest.fixture(scope="session")
def tiny_student():
  """Conformer CTC student, 1 block, d=16, 2 heads; 0.5 s of audio x 2."""
  model = student.CtcStudent(
      encoder=encoders.ConformerEncoder(model_dim=16, num_layers=1, num_heads=2, conv_kernel=3,
                                        subsampling_channels=4, dropout_rate=0.0),
      vocab_size=12, specaug=None)
  wave, pad = _audio(2, 8000, 0)
  params = jax.jit(lambda k: model.init(k, wave, pad, train=False))(jax.random.key(0))["params"]
  layouts = lora.dense_layouts(model, wave, pad, train=False)
  run = jax.jit(lambda p, a: lora.lora_apply(model, {"params": p}, a, wave, pad,
                                             train=False)["logits"])
  run_base = jax.jit(lambda p: model.apply({"params": p}, wave, pad, train=False)["logits"])
  return types.SimpleNamespace(model=model, params=params, layouts=layouts, wave=wave, pad=pad,
                               run=run, run_base=run_base, patterns=STUDENT_PATTERNS)


def tiny_teacher_config(**kw) -> w2v.Wav2Vec2Config:
  base = dict(vocab_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=48, conv_dim=(16, 16, 16), conv_stride=(5, 2, 2),
              conv_kernel=(10, 3, 2), num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4,
              feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)
  return w2v.Wav2Vec2Config(**{**base, **kw})


@pytest.fixture(scope="session")
def tiny_teacher():
  """Random tiny wav2vec2 CTC teacher (stable-layer-norm family), 0.25 s of audio x 3."""
  config = tiny_teacher_config()
  model = w2v.Wav2Vec2ForCTC(config)
  params = jax.device_put(w2v.init_params(config, 0))
  wave, pad = _audio(3, 4000, 1)
  run = jax.jit(lambda p, a: lora.lora_apply(model, {"params": p}, a, wave, pad)["logits"])
  run_base = jax.jit(lambda p: model.apply({"params": p}, wave, pad)["logits"])
  return types.SimpleNamespace(config=config, model=model, params=params, wave=wave, pad=pad,
                               run=run, run_base=run_base, patterns=TEACHER_PATTERNS)
