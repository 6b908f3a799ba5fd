"""Warm starts from a Hugging Face folder (`config.train.init_from=FOLDER`): fine-tuning an
exported teacher or a downloaded hub checkpoint with the loop; and the params-fit check that
every warm start (a run folder's too, `warm_start_params`) goes through.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from distill_jax import text as text_lib
from distill_jax.convert import hf_wav2vec2, hf_whisper
from distill_jax.models import build
from distill_jax.train import runs

log = logging.getLogger(__name__)


# Wav2Vec2Config fields that change training only (regularization, masking, token ids the
# tokenizer sets): a warm start from a Hugging Face folder may differ in them.
HF_WARM_START_FREE = ("hidden_dropout", "activation_dropout", "attention_dropout",
                      "feat_proj_dropout", "final_dropout", "layerdrop", "apply_spec_augment",
                      "mask_time_prob", "mask_time_length", "mask_time_min_masks",
                      "mask_feature_prob", "pad_token_id", "bos_token_id", "eos_token_id", "extra")


def is_hf_folder(path: str) -> bool:
  """Whether `path` is a local Hugging Face model folder (config.json) rather than a run."""
  return os.path.isfile(os.path.join(path, "config.json"))


def check_params_fit(source: str, loaded: Any, params: Any) -> None:
  """Raises naming the first parameter whose path or shape differs from this model's."""
  new = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(params)}
  old = {jax.tree_util.keystr(k): np.shape(v)
         for k, v in jax.tree_util.tree_leaves_with_path(loaded)}
  bad = sorted(set(new) ^ set(old)) or sorted(k for k in new if new[k] != old[k])
  if bad:
    k = bad[0]
    raise ValueError(f"config.train.init_from={source!r}: its params do not fit this model "
                     f"({len(bad)} differ; first {k}: {old.get(k, 'missing')} there, "
                     f"{new.get(k, 'missing')} here)")


def hf_warm_start_params(config: ml_collections.ConfigDict, source: str, params: Any,
                         tokenizer: text_lib.CharTokenizer) -> Any:
  """`Wav2Vec2ForCTC` params from a Hugging Face folder (e.g. an exported demo teacher or a
  downloaded hub checkpoint), for a wav2vec2 run's `config.train.init_from` (fine-tuning).

  The folder's architecture must be `config.model.wav2vec2`'s (every Wav2Vec2Config field but
  `HF_WARM_START_FREE`) and its vocab.json the run's vocabulary; a difference is an error
  naming the fields or tokens.
  """
  if config.model.encoder == build.WHISPER_CTC:
    return whisper_encoder_params(config, source, params)
  if config.model.encoder != build.WAV2VEC2:
    raise ValueError(f"config.train.init_from={source!r} is a Hugging Face folder, which only "
                     f"a wav2vec2 model (config.model.encoder='{build.WAV2VEC2}') or a Whisper "
                     f"CTC model ('{build.WHISPER_CTC}') starts from; this run's encoder is "
                     f"{config.model.encoder!r}")
  hf_config, loaded, hf_tokenizer = hf_wav2vec2.load_hf_folder(source)
  if not hf_tokenizer.is_compatible_with(tokenizer):
    raise ValueError(f"config.train.init_from={source!r}: its vocab.json (there vs here: "
                     f"{hf_tokenizer.describe_mismatch(tokenizer)}) is not this run's vocabulary")
  ours = build.wav2vec2_config(config.model, tokenizer.vocab_size)
  diffs = sorted(f.name for f in dataclasses.fields(ours) if f.name not in HF_WARM_START_FREE
                 and getattr(ours, f.name) != getattr(hf_config, f.name))
  if diffs:
    raise ValueError(f"config.train.init_from={source!r}: its config.json differs from "
                     "config.model.wav2vec2 in " + ", ".join(
                         f"{k} ({getattr(hf_config, k)!r} there, {getattr(ours, k)!r} here)"
                         for k in diffs))
  check_params_fit(source, loaded, params)
  log.info("warm start from the Hugging Face folder %s: fresh optimizer state and schedule",
           source)
  return jax.tree.map(jnp.asarray, loaded)


# WhisperConfig fields the encoder's params and outputs depend on.
WHISPER_ENCODER_FIELDS = ("num_mel_bins", "d_model", "encoder_layers", "encoder_attention_heads",
                          "encoder_ffn_dim", "activation_function", "max_source_positions")


def whisper_encoder_params(config: ml_collections.ConfigDict, source: str, params: Any) -> Any:
  """`params` with its `encoder` replaced by the Whisper folder `source`'s encoder (the CTC
  head and layer weights stay as initialized). The folder's encoder fields must equal
  `config.model.whisper_ctc.whisper`'s; a difference is an error naming them."""
  hf_config, loaded = hf_whisper.load_hf_folder(source)
  ours = build.whisper_config(config.model)
  diffs = [k for k in WHISPER_ENCODER_FIELDS if getattr(ours, k) != getattr(hf_config, k)]
  if diffs:
    raise ValueError(f"config.train.init_from={source!r}: its config.json differs from "
                     "config.model.whisper_ctc.whisper in " + ", ".join(
                         f"{k} ({getattr(hf_config, k)!r} there, {getattr(ours, k)!r} here)"
                         for k in diffs))
  encoder = loaded["model"]["encoder"]
  check_params_fit(source, {"encoder": encoder}, {"encoder": params["encoder"]})
  log.info("Whisper encoder from the Hugging Face folder %s; the CTC head starts fresh", source)
  return {**params, "encoder": jax.tree.map(jnp.asarray, encoder)}


# config.model keys that change training only (no parameter): a warm start may change them.
WARM_START_FREE = ("specaug_enabled", "specaug", "vtlp_enabled", "vtlp", "speed_perturb_enabled",
                   "speed_perturb")


def warm_start_params(config: ml_collections.ConfigDict, source: str, params: Any,
                      tokenizer: text_lib.CharTokenizer | None = None) -> Any:
  """The student params of run `source`'s latest checkpoint, for `config.train.init_from`.

  The source's model config must be this run's (the params tree and shapes are then equal)
  except for the training-time augmentations (`WARM_START_FREE`: a later phase may add them);
  a difference is an error naming the config keys. A Hugging Face folder (config.json) instead
  goes through `hf_warm_start_params` (needs `tokenizer`). Only a run's first start reads it: a
  resumed run continues from its own checkpoint.
  """
  if is_hf_folder(source):
    if tokenizer is None:
      raise ValueError("warm_start_params: a Hugging Face folder needs the run's tokenizer")
    return hf_warm_start_params(config, source, params, tokenizer)
  old = runs.saved_config(source)
  new_model, old_model = runs.as_json(config.model.to_dict()), runs.as_json(old.model.to_dict())
  diffs = sorted(k for k in set(new_model) | set(old_model)
                 if new_model.get(k) != old_model.get(k) and k not in WARM_START_FREE)
  if diffs:
    raise ValueError(f"config.train.init_from={source!r}: its model config differs in "
                     f"model.{{{', '.join(diffs)}}}")
  _, loaded, _, step = runs.restore_student(source, "latest")
  check_params_fit(source, loaded, params)
  log.info("warm start from %s (step %d): fresh optimizer state and schedule", source, step)
  return loaded
