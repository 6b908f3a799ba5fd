"""configs/whisper_head.py: every variant builds a Whisper CTC model whose frozen-param patterns
(`config.train.frozen_params`) leave exactly the head, the layer weights and the tuned encoder
layers to the optimizer. Shapes only (`jax.eval_shape`): no weights, no data."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import pytest
from flax import traverse_util

from configs import whisper_head
from distill_jax.models import build
from distill_jax.train import state as state_lib


@pytest.mark.parametrize("arg,tuned", [("", ()), ("linear", ()), ("window30", ()),
                                       ("tune2", ("layers_2", "layers_3", "layer_norm")),
                                       ("linear,tune2", ("layers_2", "layers_3", "layer_norm"))])
def test_variants_train_the_head_and_only_the_tuned_encoder_layers(arg, tuned):
  config = whisper_head.get_config(arg)
  model = build.build_student(config.model, vocab_size=30)
  wav = jnp.zeros((1, 16000), jnp.float32)
  params = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), wav,
                          wav)["params"]
  labels = traverse_util.flatten_dict(
      state_lib.frozen_labels(params, tuple(config.train.frozen_params)), sep="/")
  trained_encoder = {k.split("/")[1] for k, v in labels.items()
                     if v == "train" and k.startswith("encoder/")}
  assert trained_encoder == set(tuned)
  assert all(v == "train" for k, v in labels.items() if not k.startswith("encoder/"))
  assert model.tuned_layers == len(tuned) - 1 if tuned else model.tuned_layers == 0


def test_an_unknown_variant_is_a_named_error():
  with pytest.raises(ValueError, match=r"\['tune9'\] are not variants"):
    whisper_head.get_config("tune9")
