"""The exported function in JAX: normalized features -> (log_probs, logits), for parity.

`features_forward(model, params, features [N, T, F])` runs the CTC student's encoder and head
exactly as `CtcStudent.__call__` does after its front end (no paddings: every row is whole);
`student_features(model, waveform [S])` is that front end (log-mel + utterance normalization)
for one utterance. Together they equal `model.apply` on the waveform (tests/export).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from distill_jax.audio import features as feats_lib


def features_forward(model, params: dict, features: jax.Array) -> tuple[jax.Array, jax.Array]:
  """[N, T, F] -> (log_probs [N, T', V], logits [N, T', V]) in float32."""
  x = jnp.asarray(features, jnp.float32)
  pad = jnp.zeros(x.shape[:2], jnp.float32)
  enc = model.encoder.apply({"params": params["encoder"]}, x, pad, train=False)
  head = params["ctc_head"]["logits"]
  logits = (enc["outputs"] @ head["kernel"] + head["bias"]).astype(jnp.float32)
  return jax.nn.log_softmax(logits, axis=-1), logits


def student_features(model, waveform: jax.Array) -> jax.Array:
  """[S] -> [1, T, F] normalized log-mel features, as the student computes them."""
  wav = jnp.asarray(waveform, jnp.float32)[None]
  x, pad = feats_lib.log_mel(wav, jnp.zeros_like(wav), model.frontend)
  return feats_lib.normalize_features(x, pad)
