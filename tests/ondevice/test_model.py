"""Loading an exported folder: runs, and names what is missing or mismatched."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import onnx
import pytest

from distill_jax.export import reference
from distill_jax.ondevice import contract
from distill_jax.ondevice.contract import MetadataError
from distill_jax.ondevice.model import OnDeviceModel
from distill_jax.ondevice.transcribe import Transcriber


def _copy(src, tmp_path, name="m"):
  dst = str(tmp_path / name)
  shutil.copytree(src, dst)
  return dst


def _edit_json(folder, **changes):
  path = os.path.join(folder, contract.METADATA)
  with open(path) as f:
    meta = json.load(f)
  for k, v in changes.items():
    if v is None:
      meta.pop(k)
    else:
      meta[k] = v
  with open(path, "w") as f:
    json.dump(meta, f)


def test_runtime_output_equals_the_jax_student(exported, speech_wav):
  """Whole chain without JAX (numpy features + ORT) vs the JAX student on the same audio."""
  folder, model, params = exported
  path, wav = speech_wav
  t = Transcriber.load(folder)
  got = t.model.log_probs(t.features(wav))
  want, _ = reference.features_forward(model, params, reference.student_features(model, wav))
  np.testing.assert_allclose(got, np.asarray(want)[0], rtol=0, atol=1e-4)
  assert isinstance(t.transcribe_file(path).text, str)


def test_missing_and_mismatched_metadata_are_named(exported, tmp_path):
  src = exported[0]
  d = _copy(src, tmp_path, "no_key")
  _edit_json(d, blank_id=None)
  with pytest.raises(MetadataError, match=r"export.json: metadata lacks key\(s\) \['blank_id'\]"):
    OnDeviceModel.load(d)
  d = _copy(src, tmp_path, "vocab")
  _edit_json(d, vocab_size=40)
  with pytest.raises(MetadataError, match="vocab_size=40 but the vocabulary has 32"):
    OnDeviceModel.load(d)
  d = _copy(src, tmp_path, "onnx_differs")
  _edit_json(d, subsampling_factor=8)
  with pytest.raises(MetadataError, match="ONNX metadata subsampling_factor=4 differs"):
    OnDeviceModel.load(d)
  d = _copy(src, tmp_path, "tokens")
  with open(os.path.join(d, contract.TOKENS), "a") as f:
    f.write("extra 32\n")
  with pytest.raises(MetadataError, match="tokens.txt: does not list the vocabulary"):
    OnDeviceModel.load(d)
  d = _copy(src, tmp_path, "no_json")
  os.remove(os.path.join(d, contract.METADATA))
  with pytest.raises(FileNotFoundError, match="no export.json: not an exported model folder"):
    OnDeviceModel.load(d)
  d = _copy(src, tmp_path, "no_int8")
  os.remove(os.path.join(d, contract.INT8_MODEL))
  with pytest.raises(FileNotFoundError, match=r"model.int8.onnx: not found \(export with"):
    OnDeviceModel.load(d, int8=True)


def test_an_opset_the_runtime_lacks_is_named(exported, tmp_path):
  d = _copy(exported[0], tmp_path, "opset")
  path = os.path.join(d, contract.FLOAT_MODEL)
  m = onnx.load(path)
  m.opset_import[0].version = 99
  onnx.save(m, path)
  with pytest.raises(RuntimeError, match=r"model.onnx: onnxruntime .* cannot load this model "
                     r"\(exported with opset 17"):
    OnDeviceModel.load(d)
