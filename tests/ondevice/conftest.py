"""An exported tiny student folder and test audio for the runtime tests (the exporter runs in
this process with JAX; the runtime under test does not need it)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from configs import base
from distill_jax import text as text_lib
from distill_jax.export import folder
from distill_jax.models import build


def tiny_conformer():
  c = base.get_config().model
  c.conformer.update(dict(model_dim=32, num_layers=2, num_heads=4, subsampling_channels=8,
                          conv_kernel=5))
  tok = text_lib.CharTokenizer()
  model = build.build_student(c, tok.vocab_size)
  wav = jnp.zeros((1, 16000))
  params = jax.jit(lambda k: model.init({"params": k}, wav, wav, train=False))(
      jax.random.key(0))["params"]
  # A peakier head than random init gives, so decoding emits tokens (and int8 can be judged).
  params["ctc_head"]["logits"]["kernel"] = params["ctc_head"]["logits"]["kernel"] * 20
  return model, params, tok


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
  """(folder path, model, params): float and int8 ONNX of a tiny Conformer CTC student."""
  model, params, tok = tiny_conformer()
  out = str(tmp_path_factory.mktemp("exported") / "student")
  folder.export_folder(model, params, tok, out, source={"test": "tiny"}, int8=True)
  return out, model, params


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory):
  """A 2 s speech-band test signal at 16 kHz as a WAV file; returns (path, waveform)."""
  wav = folder.test_signal(2.0)
  path = str(tmp_path_factory.mktemp("audio") / "clip.wav")
  sf.write(path, wav, 16000, subtype="FLOAT")
  return path, wav


@pytest.fixture
def rng():
  return np.random.default_rng(0)
