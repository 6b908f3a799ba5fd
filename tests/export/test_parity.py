"""The exported ONNX graph equals the JAX student (float32 logits within 1e-4)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import onnxruntime as ort
import pytest

from distill_jax.export import folder, reference, student_graph
from distill_jax.ondevice import contract
from tests.export.conftest import tiny_student

TOL = 1e-4  # float32 logits, max absolute difference


def _session(model, params, tmp_path):
  proto = student_graph.build_onnx(model, params, {"model_type": "test"})
  path = str(tmp_path / "m.onnx")
  with open(path, "wb") as f:
    f.write(proto.SerializeToString())
  return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def _check(model, params, sess, seconds):
  wav = folder.test_signal(seconds)
  feats = np.asarray(reference.student_features(model, wav))
  want_lp, want_logits = (np.asarray(a) for a in reference.features_forward(model, params, feats))
  lp, logits = sess.run([contract.OUTPUT, contract.LOGITS_OUTPUT], {contract.INPUT: feats})
  assert logits.shape == want_logits.shape
  np.testing.assert_allclose(logits, want_logits, rtol=0, atol=TOL)
  np.testing.assert_allclose(lp, want_lp, rtol=0, atol=TOL)


@pytest.mark.parametrize("encoder,fields", [
    ("conformer", {}),                                              # rotary, bidirectional
    ("conformer", dict(causal=True, scan_layers=True, subsampling=8)),
    ("transformer", dict(positions="sinusoidal", subsampling=2)),
    ("transformer", dict(positions="rotary", causal=True)),
])
def test_onnx_equals_jax_at_two_lengths(encoder, fields, tmp_path):
  model, params, _ = tiny_student(encoder, **fields)
  # Scale the head up so the logits span a realistic range (random init gives ~0.1).
  params = jax.tree_util.tree_map(lambda a: a, params)
  params["ctc_head"]["logits"]["kernel"] = params["ctc_head"]["logits"]["kernel"] * 20
  sess = _session(model, params, tmp_path)
  for seconds in (1.37, 3.0):   # one graph, any length (odd frame counts included)
    _check(model, params, sess, seconds)


def test_reference_equals_the_students_own_forward(conformer_student):
  """reference.student_features + features_forward is what CtcStudent.__call__ computes."""
  model, params, _ = conformer_student
  wav = folder.test_signal(2.0)
  logits = model.apply({"params": params}, jnp.asarray(wav)[None],
                       jnp.zeros((1, wav.shape[0])), train=False)["logits"]
  _, ref = reference.features_forward(model, params, reference.student_features(model, wav))
  np.testing.assert_allclose(np.asarray(ref), np.asarray(logits), rtol=0, atol=1e-5)


def test_unsupported_students_are_named(tmp_path):
  model, params, _ = tiny_student("lstm", bidirectional=False, model_dim=16, num_layers=1)
  with pytest.raises(ValueError, match="LstmEncoder is not exportable"):
    student_graph.build_onnx(model, params, {})
