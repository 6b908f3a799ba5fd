"""Hugging Face Whisper checkpoints <-> Flax params of `distill_jax.models.whisper`.

Reading (`load_hf_folder`): a local transformers folder with `config.json` and
`model.safetensors` (or sharded `model.safetensors.index.json` + shards), read with the
safetensors numpy API (no torch; `convert.hf_folder`, shared with the wav2vec2 converter).
`generation_config.json` (prompt and suppression token ids for decoding) is read separately by
`read_generation_config`.

The conversion is strict both ways: the set of tensors a checkpoint must hold is derived from
the config, every tensor is used exactly once, and unknown, missing or mis-shaped tensors raise
`CheckpointMismatchError` naming every one of them. A folder whose `config.json` has another
`model_type` is an error naming it and the folder.

The tied output projection (`proj_out.weight`, tied to `model.decoder.embed_tokens.weight` when
`tie_word_embeddings` is true) is handled as transformers 5 loads it: absent, or present and equal
to the embedding, it is the embedding (no separate parameter); present with other values,
transformers unties it (with a warning) and so do we: the returned config has
`tie_word_embeddings=False` and the params hold `proj_out` {kernel}. With `tie_word_embeddings`
false it is required.

Layout changes: Linear `weight` [out, in] -> Dense `kernel` [in, out]; Conv1d `weight`
[out, in, 3] -> Conv `kernel` [3, in, out]; LayerNorm `weight` -> `scale`; Embedding `weight` ->
`embedding`; `model.encoder.layers.3.fc1` -> `model/encoder/layers_3/fc1`.

Writing (`save_hf_folder`): config.json + model.safetensors (float32; the tied `proj_out.weight`
left out, as transformers saves it) + generation_config.json when given, a folder that
`WhisperForConditionalGeneration.from_pretrained` loads with no missing or unexpected keys.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Mapping

import numpy as np

from distill_jax.convert import hf_folder
from distill_jax.convert.hf_folder import CheckpointMismatchError
from distill_jax.models.whisper import WhisperConfig, param_shapes

CONFIG = hf_folder.CONFIG
GENERATION_CONFIG = "generation_config.json"
PROJ_OUT = "proj_out.weight"
EMBED_TOKENS = "model.decoder.embed_tokens.weight"
MODEL = "WhisperForConditionalGeneration"

__all__ = ["CheckpointMismatchError", "load_hf_folder", "save_hf_folder", "read_config",
           "read_generation_config", "state_dict_to_params", "params_to_state_dict"]


def _param_specs(cfg: WhisperConfig) -> list[hf_folder.TensorSpec]:
  """Every tensor of a transformers `WhisperForConditionalGeneration` state dict, in order
  (`proj_out.weight` only when untied)."""
  specs: list[hf_folder.TensorSpec] = []
  d = cfg.d_model

  def add(key, shape, layout=hf_folder.identity, leaf=None):
    parts = key.split(".")
    if leaf is not None:
      parts[-1] = leaf
    path = []
    for p in parts:
      if p.isdigit() and path and path[-1] == "layers":
        path[-1] = f"layers_{p}"
      else:
        path.append(p)
    specs.append(hf_folder.TensorSpec((key,), tuple(path), tuple(shape), layout, layout))

  def linear(key, n_in, n_out, bias=True):
    add(f"{key}.weight", (n_out, n_in), hf_folder.transpose, leaf="kernel")
    if bias:
      add(f"{key}.bias", (n_out,))

  def norm(key):
    add(f"{key}.weight", (d,), leaf="scale")
    add(f"{key}.bias", (d,))

  def attention(key):
    linear(f"{key}.k_proj", d, d, bias=False)
    for proj in ("v_proj", "q_proj", "out_proj"):
      linear(f"{key}.{proj}", d, d)

  def block(key, ffn, cross):
    attention(f"{key}.self_attn")
    norm(f"{key}.self_attn_layer_norm")
    if cross:
      attention(f"{key}.encoder_attn")
      norm(f"{key}.encoder_attn_layer_norm")
    linear(f"{key}.fc1", d, ffn)
    linear(f"{key}.fc2", ffn, d)
    norm(f"{key}.final_layer_norm")

  e = "model.encoder"
  for i, n_in in ((1, cfg.num_mel_bins), (2, d)):
    add(f"{e}.conv{i}.weight", (d, n_in, 3), hf_folder.conv_to_flax, leaf="kernel")
    add(f"{e}.conv{i}.bias", (d,))
  add(f"{e}.embed_positions.weight", (cfg.max_source_positions, d), leaf="embedding")
  for i in range(cfg.encoder_layers):
    block(f"{e}.layers.{i}", cfg.encoder_ffn_dim, cross=False)
  norm(f"{e}.layer_norm")
  dec = "model.decoder"
  add(f"{dec}.embed_tokens.weight", (cfg.vocab_size, d), leaf="embedding")
  add(f"{dec}.embed_positions.weight", (cfg.max_target_positions, d), leaf="embedding")
  for i in range(cfg.decoder_layers):
    block(f"{dec}.layers.{i}", cfg.decoder_ffn_dim, cross=True)
  norm(f"{dec}.layer_norm")
  if not cfg.tie_word_embeddings:
    linear("proj_out", d, cfg.vocab_size, bias=False)
  return specs


# --- state dict <-> params -----------------------------------------------------------------------

def state_dict_to_params(config: WhisperConfig, state: Mapping[str, np.ndarray],
                         source: str = "checkpoint") -> tuple[WhisperConfig, dict[str, Any]]:
  """Converts a transformers Whisper state dict (numpy) to Flax params, strictly.

  Args:
    config: architecture the state dict must match.
    state: {HF key: array}.
    source: name used in error messages (the file).

  Returns:
    (config, params): params a nested dict of float32 numpy arrays, the tree of
    `WhisperForConditionalGeneration(config).init`. The config is the given one, except that
    `tie_word_embeddings` becomes False when a tied checkpoint stores a `proj_out.weight` that
    differs from the token embedding (what transformers does; see the module docstring).

  Raises:
    CheckpointMismatchError: unknown, missing or mis-shaped tensors (all named).
  """
  if config.tie_word_embeddings and PROJ_OUT in state and EMBED_TOKENS in state:
    if not np.array_equal(np.asarray(state[PROJ_OUT]), np.asarray(state[EMBED_TOKENS])):
      logging.warning("%s: %s differs from %s although tie_word_embeddings is true; untying "
                      "them as transformers does (config tie_word_embeddings=False)",
                      source, PROJ_OUT, EMBED_TOKENS)
      config = dataclasses.replace(config, tie_word_embeddings=False)
  expected = (f"its config.json (d_model={config.d_model}, encoder_layers="
              f"{config.encoder_layers}, decoder_layers={config.decoder_layers}, "
              f"vocab_size={config.vocab_size})")
  params = hf_folder.state_dict_to_params(
      _param_specs(config), state, source=source, expected=expected,
      optional={PROJ_OUT} if config.tie_word_embeddings else ())
  hf_folder.check_params(param_shapes(config), params, "converted params", MODEL)
  return config, params


def params_to_state_dict(config: WhisperConfig, params: Mapping) -> dict[str, np.ndarray]:
  """Flax params -> transformers state dict (float32 numpy, contiguous), strictly; the tied
  `proj_out.weight` is left out, as `save_pretrained` does."""
  hf_folder.check_params(param_shapes(config), params, "params", MODEL)
  return hf_folder.params_to_state_dict(_param_specs(config), params)


# --- folders -------------------------------------------------------------------------------------

def read_config(folder: str) -> WhisperConfig:
  """The `WhisperConfig` of a transformers folder.

  Raises:
    FileNotFoundError: not a folder, or no config.json. ValueError: model_type is not 'whisper'
    (the message names it and the folder) or the config is unsupported.
  """
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"{folder!r} is not a folder (a transformers Whisper checkpoint "
                            "with config.json and model.safetensors)")
  path = os.path.join(folder, CONFIG)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{folder}: no {CONFIG}")
  hf = hf_folder.read_json(path)
  model_type = hf.get("model_type")
  if model_type != "whisper":
    raise ValueError(f"{folder} holds a model_type={model_type!r} checkpoint ({path}), not a "
                     "Whisper one (model_type 'whisper')")
  return WhisperConfig.from_hf_dict(hf, source=path)


def read_generation_config(folder: str) -> dict[str, Any]:
  """The folder's `generation_config.json` as a dict ({} when there is none)."""
  path = os.path.join(folder, GENERATION_CONFIG)
  return hf_folder.read_json(path) if os.path.isfile(path) else {}


def load_hf_folder(folder: str) -> tuple[WhisperConfig, dict[str, Any]]:
  """Loads a transformers Whisper checkpoint folder.

  Args:
    folder: local folder with config.json and model.safetensors (or a sharded
      model.safetensors.index.json; pytorch_model.bin is read too when torch is installed).

  Returns:
    (config, params): params a nested dict of float32 numpy arrays for
    `WhisperForConditionalGeneration(config)`.

  Raises:
    FileNotFoundError: missing folder or files. ValueError: not a Whisper checkpoint, or an
    unsupported config. CheckpointMismatchError: tensors not matching the config.
  """
  config = read_config(folder)
  files = hf_folder.weight_files(folder)
  return state_dict_to_params(config, hf_folder.read_state_dict(folder),
                              source=", ".join(files))


def save_hf_folder(config: WhisperConfig, params: Mapping, out_dir: str,
                   generation_config: Mapping[str, Any] | None = None) -> str:
  """Writes config.json + model.safetensors (+ generation_config.json when given) that
  `transformers.WhisperForConditionalGeneration.from_pretrained(out_dir)` loads with no missing
  or unexpected keys. Returns `out_dir`."""
  files = {} if generation_config is None else {GENERATION_CONFIG: dict(generation_config)}
  return hf_folder.write_hf_folder(out_dir, params_to_state_dict(config, params),
                                   config.to_hf_dict(), files)
