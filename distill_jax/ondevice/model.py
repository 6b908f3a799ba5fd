"""An exported folder (`ondevice/contract.py`) loaded into onnxruntime.

`OnDeviceModel.load(folder, int8=False)` checks the folder before running anything: export.json
has every required key with the right type and consistent values, tokens.txt lists the same
vocabulary, the ONNX file's own metadata equals export.json, and its input/output shapes match
the feature and vocabulary sizes. Each failure raises `MetadataError` (or `FileNotFoundError`)
naming the file and the key; a model onnxruntime cannot load (e.g. an opset newer than the
installed runtime knows) raises `RuntimeError` naming the file, its opset and the runtime.
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnxruntime as ort

from distill_jax.ondevice import contract
from distill_jax.ondevice.contract import MetadataError


def read_metadata(folder: str) -> dict:
  """export.json of `folder`, validated."""
  path = os.path.join(folder, contract.METADATA)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{folder}: no {contract.METADATA}: not an exported model folder "
                            "(python -m launch.export writes one)")
  try:
    with open(path, encoding="utf-8") as f:
      meta = json.load(f)
  except json.JSONDecodeError as e:
    raise MetadataError(f"{path}: not valid JSON: {e}") from None
  if not isinstance(meta, dict):
    raise MetadataError(f"{path}: expected a JSON object")
  return contract.validate(meta, path)


def _check_tokens(folder: str, vocabulary: list[str]) -> None:
  path = os.path.join(folder, contract.TOKENS)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{folder}: no {contract.TOKENS}")
  with open(path, encoding="utf-8") as f:
    text = f.read()
  if text != contract.tokens_text(vocabulary):
    raise MetadataError(f"{path}: does not list the vocabulary of {contract.METADATA} "
                        "(token <id> per line, in id order)")


class OnDeviceModel:
  """features [T, F] -> log_probs [T', V] with onnxruntime; `meta` is export.json."""

  def __init__(self, session: ort.InferenceSession, meta: dict, path: str):
    self.session, self.meta, self.path = session, meta, path
    self.vocabulary: list[str] = meta["vocabulary"]
    self.blank_id: int = meta["blank_id"]

  @classmethod
  def load(cls, folder: str, int8: bool = False, threads: int = 1) -> "OnDeviceModel":
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
      raise FileNotFoundError(f"{folder}: model folder not found")
    meta = read_metadata(folder)
    _check_tokens(folder, meta["vocabulary"])
    path = os.path.join(folder, contract.INT8_MODEL if int8 else contract.FLOAT_MODEL)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{path}: not found" + (" (export with --int8)" if int8 else ""))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
      session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
      raise RuntimeError(f"{path}: onnxruntime {ort.__version__} cannot load this model "
                         f"(exported with opset {meta['opset']}; an older runtime may lack "
                         f"it): {e}") from e
    props = contract.decode_props(session.get_modelmeta().custom_metadata_map)
    for key in contract.REQUIRED_KEYS:
      if key not in props:
        raise MetadataError(f"{path}: ONNX metadata lacks key {key!r}")
      if props[key] != meta[key]:
        raise MetadataError(f"{path}: ONNX metadata {key}={props[key]!r:.60} differs from "
                            f"{contract.METADATA}'s {meta[key]!r:.60}")
    model = cls(session, meta, path)
    model._check_io()
    return model

  def _check_io(self) -> None:
    ins = {i.name: i for i in self.session.get_inputs()}
    outs = {o.name: o for o in self.session.get_outputs()}
    if contract.INPUT not in ins or contract.OUTPUT not in outs:
      raise MetadataError(f"{self.path}: needs input {contract.INPUT!r} and output "
                          f"{contract.OUTPUT!r}, has {sorted(ins)} -> {sorted(outs)}")
    f = ins[contract.INPUT].shape[-1]
    if f != self.meta["feature_config"].get("num_mels", 80):
      raise MetadataError(f"{self.path}: input {contract.INPUT!r} has {f} features, "
                          f"feature_config.num_mels says {self.meta['feature_config']}")
    v = outs[contract.OUTPUT].shape[-1]
    if v != self.meta["vocab_size"]:
      raise MetadataError(f"{self.path}: output {contract.OUTPUT!r} has {v} classes, "
                          f"vocab_size={self.meta['vocab_size']}")

  def log_probs(self, features: np.ndarray) -> np.ndarray:
    """[T, F] normalized features -> float32 [T', V] log-probabilities."""
    x = np.asarray(features, np.float32)[None]
    return self.session.run([contract.OUTPUT], {contract.INPUT: x})[0][0]
