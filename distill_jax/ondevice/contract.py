"""The exported folder's contract, shared by the exporter (writer) and the runtime (reader).

A folder holds:
  model.onnx          float32 whole-utterance model: features [N, T, F] -> log_probs [N, T', V]
                      (and logits [N, T', V]); every row is a whole utterance (no paddings)
  model.int8.onnx     the same with int8 weights (optional)
  tokens.txt          "<token> <id>" per line, id order (sherpa-onnx's tokens file)
  export.json         the metadata below, as JSON (also inside each ONNX file's metadata_props,
                      where every value is a string; JSON-typed values are JSON-encoded)

`features` are the student's training features: log-mel (`feature_config`) normalized per
utterance (mean/variance over its frames), computed by `ondevice/features.py`.
"""

from __future__ import annotations

import json
from typing import Any

MODEL_TYPE = "distill_jax_ctc"
CONTRACT_VERSION = 1
FLOAT_MODEL = "model.onnx"
INT8_MODEL = "model.int8.onnx"
TOKENS = "tokens.txt"
METADATA = "export.json"
INPUT = "features"
OUTPUT = "log_probs"
LOGITS_OUTPUT = "logits"

# key -> Python type of its value in export.json.
REQUIRED_KEYS = {
    "model_type": str,            # MODEL_TYPE
    "contract_version": int,      # CONTRACT_VERSION
    "vocabulary": list,           # token strings in id order
    "vocab_size": int,
    "blank_id": int,
    "word_delimiter": str,        # the token between words ("|")
    "special_tokens": list,       # tokens dropped when ids become text
    "feature_config": dict,       # LogMelConfig fields
    "feature_normalization": str,  # "utterance"
    "subsampling_factor": int,    # feature frames per output frame
    "frame_shift_ms": float,      # output frame rate: hop_ms * subsampling_factor
    "opset": int,
}
NORMALIZATIONS = ("utterance",)


class MetadataError(ValueError):
  """Missing or inconsistent metadata of an exported folder; the message names file and key."""


def encode_props(meta: dict[str, Any]) -> dict[str, str]:
  """metadata -> ONNX metadata_props (strings; non-strings JSON-encoded)."""
  return {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}


def decode_props(props: dict[str, str]) -> dict[str, Any]:
  """ONNX metadata_props -> metadata with the types of REQUIRED_KEYS (others kept as strings)."""
  out: dict[str, Any] = {}
  for k, v in props.items():
    kind = REQUIRED_KEYS.get(k)
    if kind is None or kind is str:
      out[k] = v
      continue
    try:
      out[k] = json.loads(v)
    except json.JSONDecodeError as e:
      raise MetadataError(f"metadata key {k!r}: not JSON ({v[:60]!r}): {e}") from None
  return out


def validate(meta: dict[str, Any], source: str) -> dict[str, Any]:
  """Checks keys, types and consistency; returns `meta`. Errors name `source` and the key."""
  missing = [k for k in REQUIRED_KEYS if k not in meta]
  if missing:
    raise MetadataError(f"{source}: metadata lacks key(s) {missing}")
  for k, kind in REQUIRED_KEYS.items():
    v = meta[k]
    ok = isinstance(v, kind) or (kind is float and isinstance(v, int))
    if not ok or (kind is int and isinstance(v, bool)):
      raise MetadataError(f"{source}: metadata key {k!r} should be {kind.__name__}, got "
                          f"{type(v).__name__} {v!r:.60}")
  if meta["model_type"] != MODEL_TYPE:
    raise MetadataError(f"{source}: model_type={meta['model_type']!r}, expected {MODEL_TYPE!r}")
  if meta["contract_version"] > CONTRACT_VERSION:
    raise MetadataError(f"{source}: contract_version={meta['contract_version']} is newer than "
                        f"this runtime's {CONTRACT_VERSION}")
  vocab = meta["vocabulary"]
  if len(vocab) != meta["vocab_size"]:
    raise MetadataError(f"{source}: vocab_size={meta['vocab_size']} but the vocabulary has "
                        f"{len(vocab)} tokens")
  if not all(isinstance(t, str) for t in vocab) or len(set(vocab)) != len(vocab):
    raise MetadataError(f"{source}: vocabulary must be distinct strings")
  if not 0 <= meta["blank_id"] < len(vocab):
    raise MetadataError(f"{source}: blank_id={meta['blank_id']} outside the vocabulary "
                        f"(size {len(vocab)})")
  if meta["word_delimiter"] not in vocab:
    raise MetadataError(f"{source}: word_delimiter {meta['word_delimiter']!r} is not in the "
                        "vocabulary")
  if meta["feature_normalization"] not in NORMALIZATIONS:
    raise MetadataError(f"{source}: feature_normalization={meta['feature_normalization']!r} is "
                        f"not one of {NORMALIZATIONS}")
  if meta["subsampling_factor"] < 1:
    raise MetadataError(f"{source}: subsampling_factor={meta['subsampling_factor']} < 1")
  return meta


def tokens_text(vocabulary: list[str]) -> str:
  """tokens.txt content: '<token> <id>' per line."""
  return "".join(f"{t} {i}\n" for i, t in enumerate(vocabulary))
