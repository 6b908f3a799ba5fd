"""Hugging Face wav2vec2 CTC checkpoints <-> Flax params of `distill_jax.models.wav2vec2`.

Reading: a local folder with `config.json` + `model.safetensors` (read with numpy, no torch) or
`pytorch_model.bin` (needs torch, imported lazily), sharded variants with `*.index.json` too,
`vocab.json` for the `CharTokenizer`, and `preprocessor_config.json` if present (normalization and
attention-mask settings). A hub id is fetched only when `huggingface_hub` is importable and the hub
reachable; otherwise the error says how to download the folder.

The conversion is strict: the set of tensors a checkpoint must hold is derived from the config,
every tensor is used exactly once, and unknown, missing or mis-shaped tensors raise
`CheckpointMismatchError` naming every one of them. Both weight-norm namings of the positional
conv are accepted (`weight_g`/`weight_v`, older torch, and
`parametrizations.weight.original0`/`original1`, torch >= 2.1). `wav2vec2.masked_spec_embed`
(the SpecAugment vector, present when `mask_time_prob` or `mask_feature_prob` > 0) is not
ignored: it is carried as a parameter (used only by the trainee's time masking), so that exports
round-trip and transformers loads them without missing keys. No key is skipped.

Layout changes: Linear `weight` [out, in] -> Dense `kernel` [in, out]; Conv1d `weight`
[out, in/groups, K] -> Conv `kernel` [K, in/groups, out]; LayerNorm/GroupNorm `weight` -> `scale`;
weight-norm `g` [1, 1, K] -> `weight_g` [K].

Writing: `export_hf_folder` writes a folder that `transformers.Wav2Vec2ForCTC.from_pretrained` and
`Wav2Vec2Processor.from_pretrained` load with no missing or unexpected keys. `save_teacher` /
`load_teacher` keep converted params as an Orbax checkpoint with the config, the vocabulary and
the sha256 of the source weights (`teacher.json`).
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any, Mapping

import numpy as np

from distill_jax import text
from distill_jax.convert import hf_folder
# The shared reading and strict-mapping helpers, under the names this module always had.
from distill_jax.convert.hf_folder import (PYTORCH_BIN, SAFETENSORS, CheckpointMismatchError,
                                           read_state_dict, weight_files, weights_sha256)
from distill_jax.models.wav2vec2 import Wav2Vec2Config, param_shapes

__all__ = ["PYTORCH_BIN", "SAFETENSORS", "CheckpointMismatchError", "read_state_dict",
           "weight_files", "weights_sha256", "state_dict_to_params", "params_to_state_dict",
           "resolve_folder", "load_hf_folder", "export_hf_folder", "save_teacher",
           "load_teacher", "convert"]

TEACHER_META = "teacher.json"
PARAMS_DIR = "params"

# Positional-conv weight-norm names: (torch >= 2.1 parametrizations, legacy weight_norm).
_WN_NAMES = {
    "g": ("parametrizations.weight.original0", "weight_g"),
    "v": ("parametrizations.weight.original1", "weight_v"),
}


_Spec = hf_folder.TensorSpec
_ident, _transpose = hf_folder.identity, hf_folder.transpose
_conv_to_flax = hf_folder.conv_to_flax


def _flat(x: np.ndarray) -> np.ndarray:
  return x.reshape(-1)


def _param_specs(cfg: Wav2Vec2Config) -> list[_Spec]:
  """Every tensor of a transformers `Wav2Vec2ForCTC` state dict for `cfg`, in a fixed order."""
  specs: list[_Spec] = []

  def add(key, path, shape, to_flax=_ident, to_hf=_ident):
    keys = key if isinstance(key, tuple) else (key,)
    specs.append(_Spec(keys, tuple(path.split("/")), tuple(shape), to_flax, to_hf))

  def linear(key, path, n_in, n_out):
    add(f"{key}.weight", f"{path}/kernel", (n_out, n_in), _transpose, _transpose)
    add(f"{key}.bias", f"{path}/bias", (n_out,))

  def norm(key, path, n):
    add(f"{key}.weight", f"{path}/scale", (n,))
    add(f"{key}.bias", f"{path}/bias", (n,))

  d, w = cfg.hidden_size, "wav2vec2"
  c_in = 1
  for i, (c, k) in enumerate(zip(cfg.conv_dim, cfg.conv_kernel)):
    key, path = f"{w}.feature_extractor.conv_layers.{i}", f"{w}/feature_extractor/conv_layers_{i}"
    add(f"{key}.conv.weight", f"{path}/conv/kernel", (c, c_in, k), _conv_to_flax, _conv_to_flax)
    if cfg.conv_bias:
      add(f"{key}.conv.bias", f"{path}/conv/bias", (c,))
    if cfg.feat_extract_norm == "layer" or i == 0:
      norm(f"{key}.layer_norm", f"{path}/layer_norm", c)
    c_in = c
  norm(f"{w}.feature_projection.layer_norm", f"{w}/feature_projection/layer_norm", c_in)
  linear(f"{w}.feature_projection.projection", f"{w}/feature_projection/projection", c_in, d)
  if cfg.has_masked_spec_embed:
    add(f"{w}.masked_spec_embed", f"{w}/masked_spec_embed", (d,))
  k, g = cfg.num_conv_pos_embeddings, cfg.num_conv_pos_embedding_groups
  key, path = f"{w}.encoder.pos_conv_embed.conv", f"{w}/encoder/pos_conv_embed/conv"
  add(tuple(f"{key}.{n}" for n in _WN_NAMES["g"]), f"{path}/weight_g", (1, 1, k), _flat,
      lambda x: x.reshape(1, 1, -1))
  add(tuple(f"{key}.{n}" for n in _WN_NAMES["v"]), f"{path}/weight_v", (d, d // g, k),
      _conv_to_flax, _conv_to_flax)
  add(f"{key}.bias", f"{path}/bias", (d,))
  norm(f"{w}.encoder.layer_norm", f"{w}/encoder/layer_norm", d)
  for i in range(cfg.num_hidden_layers):
    key, path = f"{w}.encoder.layers.{i}", f"{w}/encoder/layers_{i}"
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
      linear(f"{key}.attention.{proj}", f"{path}/attention/{proj}", d, d)
    norm(f"{key}.layer_norm", f"{path}/layer_norm", d)
    linear(f"{key}.feed_forward.intermediate_dense", f"{path}/feed_forward/intermediate_dense",
           d, cfg.intermediate_size)
    linear(f"{key}.feed_forward.output_dense", f"{path}/feed_forward/output_dense",
           cfg.intermediate_size, d)
    norm(f"{key}.final_layer_norm", f"{path}/final_layer_norm", d)
  linear("lm_head", "lm_head", d, cfg.vocab_size)
  return specs


# --- state dict -> params ------------------------------------------------------------------------

def state_dict_to_params(config: Wav2Vec2Config, state: Mapping[str, np.ndarray],
                         source: str = "checkpoint") -> dict[str, Any]:
  """Converts a transformers `Wav2Vec2ForCTC` state dict (numpy) to Flax params, strictly.

  Args:
    config: architecture the state dict must match.
    state: {HF key: array}.
    source: name used in error messages (the file).

  Returns:
    Nested dict of float32 numpy arrays, the tree of `Wav2Vec2ForCTC(config).init`.

  Raises:
    CheckpointMismatchError: unknown, missing, duplicated or mis-shaped tensors (all named).
  """
  expected = (f"its config.json (hidden_size={config.hidden_size}, "
              f"num_hidden_layers={config.num_hidden_layers})")
  params = hf_folder.state_dict_to_params(
      _param_specs(config), state, source=source, expected=expected,
      duplicate_note="keys present under both weight-norm namings")
  _check_against_model(config, params, "converted params")
  return params


def _check_against_model(config: Wav2Vec2Config, params: Mapping, what: str) -> None:
  """Checks a params tree against the module's own tree (paths and shapes), naming differences."""
  hf_folder.check_params(param_shapes(config), params, what, "Wav2Vec2ForCTC")


def params_to_state_dict(config: Wav2Vec2Config, params: Mapping,
                         weight_norm_naming: str = "parametrizations") -> dict[str, np.ndarray]:
  """Flax params -> transformers state dict (float32 numpy), strictly (inverse of the above).

  Args:
    config: architecture.
    params: the Flax params tree (jax or numpy arrays).
    weight_norm_naming: "parametrizations" (`...parametrizations.weight.original0/1`, what
      torch >= 2.1 transformers saves) or "legacy" (`weight_g`/`weight_v`).
  """
  if weight_norm_naming not in ("parametrizations", "legacy"):
    raise ValueError(f"weight_norm_naming={weight_norm_naming!r}: 'parametrizations' or 'legacy'")
  _check_against_model(config, params, "params")
  pick = 0 if weight_norm_naming == "parametrizations" else -1
  return hf_folder.params_to_state_dict(_param_specs(config), params,
                                        name=lambda spec: spec.hf_keys[pick])


# --- reading folders -----------------------------------------------------------------------------

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def resolve_folder(path_or_id: str) -> str:
  """A local folder for a path or a hub id (downloaded only if the hub can be reached).

  Raises:
    FileNotFoundError: not a folder, and not downloadable; the message says how to get it.
  """
  if os.path.isdir(path_or_id):
    return path_or_id
  if os.path.exists(path_or_id) or not _HUB_ID.match(path_or_id):
    raise FileNotFoundError(f"{path_or_id!r} is not a folder with config.json and weights")
  how = (f"Download it where there is network, e.g. `huggingface-cli download {path_or_id} "
         f"--local-dir DIR` (or `hf download {path_or_id} --local-dir DIR`), copy DIR here and "
         f"pass its path instead of the hub id.")
  try:
    import huggingface_hub  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise FileNotFoundError(f"{path_or_id!r} is not a local folder and huggingface_hub is not "
                            f"installed to fetch it from the hub. {how}") from None
  offline = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")
  try:
    folder = huggingface_hub.snapshot_download(  # safetensors if the repo has them,
        path_or_id, local_files_only=offline, allow_patterns=["*.json", "*.safetensors"])
    try:
      weight_files(folder)
    except FileNotFoundError:  # else the PyTorch pickle.
      folder = huggingface_hub.snapshot_download(
          path_or_id, local_files_only=offline, allow_patterns=["*.json", "pytorch_model*.bin"])
    return folder
  except Exception as e:  # offline, unreachable, unknown repo, gated...
    raise FileNotFoundError(
        f"{path_or_id!r} is not a local folder and could not be fetched from the Hugging Face "
        f"hub{' (HF_HUB_OFFLINE is set)' if offline else ''}: {type(e).__name__}: "
        f"{str(e).rstrip('. ')}. {how}"
    ) from None


def load_hf_folder(path_or_id: str) -> tuple[Wav2Vec2Config, dict[str, Any], text.CharTokenizer]:
  """Loads a transformers wav2vec2 CTC checkpoint.

  Args:
    path_or_id: local folder (config.json, model.safetensors or pytorch_model.bin, vocab.json,
      optional preprocessor_config.json), or a hub id (see `resolve_folder`).

  Returns:
    (config, params, tokenizer): params a nested dict of float32 numpy arrays for
    `Wav2Vec2ForCTC(config)`.

  Raises:
    FileNotFoundError: missing folder or files. CheckpointMismatchError: tensors not matching
    the config. ValueError: unsupported config.
  """
  folder = resolve_folder(path_or_id)
  config = Wav2Vec2Config.from_folder(folder)
  vocab_path = os.path.join(folder, "vocab.json")
  if not os.path.isfile(vocab_path):
    raise FileNotFoundError(f"{folder}: no vocab.json (the CTC vocabulary)")
  tokenizer = text.CharTokenizer.from_file(vocab_path)
  if tokenizer.vocab_size > config.vocab_size:
    raise ValueError(f"{vocab_path}: {tokenizer.vocab_size} tokens but config.json has "
                     f"vocab_size={config.vocab_size}")
  files = weight_files(folder)
  params = state_dict_to_params(config, read_state_dict(folder),
                                source=", ".join(os.path.basename(f) for f in files))
  return config, params, tokenizer


# --- writing HF folders --------------------------------------------------------------------------

def _tokenizer_files(tokenizer: text.CharTokenizer) -> dict[str, dict]:
  specials = {name: tok for name, tok in (("bos_token", text.BOS), ("eos_token", text.EOS),
                                          ("unk_token", text.UNK), ("pad_token", text.PAD))
              if tok in tokenizer.vocab}
  config = {
      "tokenizer_class": "Wav2Vec2CTCTokenizer",
      **specials,
      "word_delimiter_token": text.WORD_DELIM,
      "do_lower_case": False,
      "replace_word_delimiter_char": " ",
      "processor_class": "Wav2Vec2Processor",
  }
  return {"tokenizer_config.json": config, "special_tokens_map.json": specials}


def export_hf_folder(config: Wav2Vec2Config, params: Mapping, tokenizer: text.CharTokenizer,
                     out_dir: str, weight_norm_naming: str = "parametrizations") -> str:
  """Writes a transformers folder: config.json, model.safetensors, vocab.json, tokenizer and
  preprocessor configs, so that `Wav2Vec2ForCTC.from_pretrained(out_dir)` and
  `Wav2Vec2Processor.from_pretrained(out_dir)` load it. Returns `out_dir`."""
  if tokenizer.vocab_size > config.vocab_size:
    raise ValueError(f"tokenizer has {tokenizer.vocab_size} tokens > vocab_size "
                     f"{config.vocab_size}")
  state = params_to_state_dict(config, params, weight_norm_naming)
  files = {"preprocessor_config.json": config.preprocessor_dict(), **_tokenizer_files(tokenizer)}
  hf_folder.write_hf_folder(out_dir, state, config.to_hf_dict(), files)
  tokenizer.save(out_dir)
  return out_dir


# --- converted teacher (Orbax) -------------------------------------------------------------------

def save_teacher(out_dir: str, config: Wav2Vec2Config, params: Mapping,
                 tokenizer: text.CharTokenizer, *, source: str, source_sha256: str) -> dict:
  """Writes a converted teacher: `params/` (Orbax), config.json + preprocessor_config.json,
  vocab.json and `teacher.json` {source, source_sha256, ...}. Returns the metadata dict."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  out_dir = os.path.abspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  params_dir = os.path.join(out_dir, PARAMS_DIR)
  if os.path.exists(params_dir):
    raise FileExistsError(f"{params_dir} exists; choose an empty --out")
  import jax  # pylint: disable=import-outside-toplevel
  ckptr = ocp.StandardCheckpointer()
  # Contiguous device arrays save ~3x faster than the converter's transposed numpy views.
  ckptr.save(params_dir, jax.device_put(params))
  ckptr.wait_until_finished()
  for name, content in (("config.json", config.to_hf_dict()),
                        ("preprocessor_config.json", config.preprocessor_dict())):
    with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
      json.dump(content, f, indent=2, sort_keys=True)
  tokenizer.save(out_dir)
  meta = {
      "model": "wav2vec2_ctc",
      "source": source,
      "source_sha256": source_sha256,
      "params": PARAMS_DIR,
      "format": "orbax",
      "num_params": int(sum(np.size(v) for v in hf_folder.flatten(params).values())),
      "converted_unix_time": int(time.time()),
  }
  with open(os.path.join(out_dir, TEACHER_META), "w", encoding="utf-8") as f:
    json.dump(meta, f, indent=2, sort_keys=True)
  return meta


def load_teacher(teacher_dir: str) -> tuple[Wav2Vec2Config, dict[str, Any], text.CharTokenizer,
                                            dict]:
  """Restores what `save_teacher` wrote: (config, params, tokenizer, metadata)."""
  import jax  # pylint: disable=import-outside-toplevel
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  teacher_dir = os.path.abspath(teacher_dir)
  with open(os.path.join(teacher_dir, TEACHER_META), encoding="utf-8") as f:
    meta = json.load(f)
  config = Wav2Vec2Config.from_folder(teacher_dir)
  tokenizer = text.CharTokenizer.from_file(teacher_dir)
  target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype), param_shapes(config))
  params = ocp.StandardCheckpointer().restore(os.path.join(teacher_dir, meta["params"]), target)
  return config, params, tokenizer, meta


def convert(path_or_id: str, out_dir: str) -> dict:
  """HF folder or hub id -> converted teacher in `out_dir` (see `save_teacher`)."""
  folder = resolve_folder(path_or_id)
  config, params, tokenizer = load_hf_folder(folder)
  return save_teacher(out_dir, config, params, tokenizer, source=path_or_id,
                      source_sha256=weights_sha256(folder))
