"""Writes the on-device folder of a CTC student (`ondevice/contract.py` describes it).

    model, params, tokenizer, step = runs.restore_student(workdir, "best")
    export_folder(model, params, tokenizer, "exports/student", source=..., int8=True)

After writing, the ONNX model is run on a test signal and compared with the JAX student
(`reference.py`): the largest absolute logit difference goes into export.json
(`parity.max_abs_logits`), and an export above `PARITY_TOLERANCE` raises instead of leaving a
wrong model behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from distill_jax import text as text_lib
from distill_jax.export import quantize as quantize_lib
from distill_jax.export import reference
from distill_jax.export import student_graph
from distill_jax.ondevice import contract

EXPORT_VERSION = "1"
PARITY_TOLERANCE = 1e-4


def metadata(model, tokenizer: text_lib.CharTokenizer, source: dict[str, Any]) -> dict:
  """The contract's keys (plus `source` and the exporter version) for this student."""
  vocab = [tokenizer.id_to_token[i] for i in range(tokenizer.vocab_size)]
  frontend = dataclasses.asdict(model.frontend)
  sub = int(model.encoder.subsampling)
  return dict(
      model_type=contract.MODEL_TYPE, contract_version=contract.CONTRACT_VERSION,
      vocabulary=vocab, vocab_size=len(vocab), blank_id=int(tokenizer.blank_id),
      word_delimiter=text_lib.WORD_DELIM,
      special_tokens=[t for t in text_lib.SPECIAL_TOKENS if t in tokenizer.vocab],
      feature_config=frontend, feature_normalization="utterance", subsampling_factor=sub,
      frame_shift_ms=float(model.frontend.hop_ms) * sub, opset=student_graph.OPSET,
      encoder=type(model.encoder).__name__, exporter_version=EXPORT_VERSION,
      source=json.dumps(source, sort_keys=True))


def test_signal(seconds: float = 3.0, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
  """A deterministic speech-band test waveform: a few harmonic chirps plus noise, float32."""
  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * sample_rate)) / sample_rate
  f0 = 120 + 60 * np.sin(2 * np.pi * 0.7 * t)
  phase = 2 * np.pi * np.cumsum(f0) / sample_rate
  x = sum(np.sin(k * phase) / k for k in range(1, 12)) * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t))
  x = 0.1 * x + 0.01 * rng.standard_normal(t.shape)
  return x.astype(np.float32)


def parity(model, params: dict, onnx_path: str, waveform: np.ndarray) -> dict[str, float]:
  """Max |ONNX - JAX| of logits and log-probs on one waveform's student features."""
  feats = np.asarray(reference.student_features(model, waveform))
  jax_lp, jax_logits = (np.asarray(a) for a in reference.features_forward(model, params, feats))
  sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
  lp, logits = sess.run([contract.OUTPUT, contract.LOGITS_OUTPUT], {contract.INPUT: feats})
  return dict(max_abs_logits=float(np.max(np.abs(logits - jax_logits))),
              max_abs_log_probs=float(np.max(np.abs(lp - jax_lp))),
              frames=int(lp.shape[1]))


def _save(model_proto: onnx.ModelProto, path: str) -> None:
  tmp = path + ".tmp"
  onnx.save(model_proto, tmp)
  os.replace(tmp, path)


def export_folder(model, params: dict, tokenizer: text_lib.CharTokenizer, out_dir: str, *,
                  source: dict[str, Any] | None = None, int8: bool = True,
                  check_waveform: np.ndarray | None = None) -> dict:
  """Writes model.onnx (+ model.int8.onnx), tokens.txt, vocab.json, export.json; returns the
  export.json content (with parity and file sizes)."""
  if tokenizer.vocab_size != model.vocab_size:
    raise ValueError(f"tokenizer has {tokenizer.vocab_size} tokens, the student's head "
                     f"{model.vocab_size}")
  os.makedirs(out_dir, exist_ok=True)
  meta = metadata(model, tokenizer, source or {})
  contract.validate(meta, "export metadata")
  float_path = os.path.join(out_dir, contract.FLOAT_MODEL)
  _save(student_graph.build_onnx(model, params, meta), float_path)
  wav = test_signal(sample_rate=model.frontend.sample_rate) if check_waveform is None \
      else check_waveform
  report = parity(model, params, float_path, wav)
  if report["max_abs_logits"] > PARITY_TOLERANCE:
    raise AssertionError(f"{float_path}: ONNX logits differ from JAX by "
                         f"{report['max_abs_logits']:.3g} > {PARITY_TOLERANCE}")
  sizes = {contract.FLOAT_MODEL: os.path.getsize(float_path)}
  if int8:
    int8_path = os.path.join(out_dir, contract.INT8_MODEL)
    quantize_lib.quantize_int8(float_path, int8_path)
    sizes[contract.INT8_MODEL] = os.path.getsize(int8_path)
  with open(os.path.join(out_dir, contract.TOKENS), "w", encoding="utf-8") as f:
    f.write(contract.tokens_text(meta["vocabulary"]))
  tokenizer.save(out_dir)
  meta = dict(meta, parity=report, file_bytes=sizes)
  with open(os.path.join(out_dir, contract.METADATA), "w", encoding="utf-8") as f:
    json.dump(meta, f, indent=1, ensure_ascii=False)
  return meta
