"""Tests of the HF <-> Flax Whisper converter (distill_jax/convert/hf_whisper.py).

Reference tests (marker `torch`) use tiny random transformers checkpoints saved with
`save_pretrained` (tests/models/whisper_tiny.py): HF -> Flax -> HF is bit-exact and loads in
transformers with no missing or unexpected keys. The strictness tests need no torch: their
checkpoints are written by our own exporter from random params.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from distill_jax.convert import hf_whisper as conv
from distill_jax.models import whisper as w
from tests.models import whisper_tiny
from tests.models.whisper_tiny import hf_fixture  # noqa: F401  pylint: disable=unused-import

ATOL = 1e-4  # float32 logits, absolute.


def _config(**kw) -> w.WhisperConfig:
  return whisper_tiny.flax_config(**{"max_source_positions": 50, **kw})


@functools.partial(jax.jit, static_argnums=0)
def _logits(config: w.WhisperConfig, params, feats, ids):
  """Our logits (one compile per architecture, shared by the tests)."""
  return w.WhisperForConditionalGeneration(config).apply({"params": params}, feats, ids)["logits"]


def _assert_logits_match(model, config: w.WhisperConfig, params) -> None:
  """Our logits equal transformers' `model`'s within ATOL on random features."""
  feats = whisper_tiny.features(1, config.num_frames)
  ids = np.array([[251, 259, 5, 9]])
  ref = whisper_tiny.hf_forward(model, feats, ids)["logits"]
  ours = _logits(config, params, feats, ids.astype(np.int32))
  np.testing.assert_allclose(np.asarray(ours), ref, atol=ATOL, rtol=0)


def _flat(params) -> dict[str, np.ndarray]:
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  return {jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves}


def _assert_same_params(a, b):
  fa, fb = _flat(a), _flat(b)
  assert fa.keys() == fb.keys()
  for k in fa:
    np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)


@pytest.mark.torch
@pytest.mark.parametrize("kind", ["en", "multi"])
def test_hf_flax_hf_round_trip_is_bit_exact(hf, tmp_path, kind):
  src = whisper_tiny.save(whisper_tiny.hf_model(kind), tmp_path / "src")
  config, params = conv.load_hf_folder(src)
  assert config.tie_word_embeddings and "proj_out" not in params
  out = conv.save_hf_folder(config, params, str(tmp_path / "out"),
                            generation_config=conv.read_generation_config(src))
  a, b = load_file(os.path.join(src, "model.safetensors")), load_file(
      os.path.join(out, "model.safetensors"))
  assert a.keys() == b.keys()  # the tied proj_out.weight absent from both
  for k in a:
    assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k
  with open(os.path.join(src, "config.json"), encoding="utf-8") as f:
    src_config = json.load(f)
  with open(os.path.join(out, "config.json"), encoding="utf-8") as f:
    out_config = json.load(f)
  assert {k: v for k, v in out_config.items() if k in src_config} == src_config
  assert conv.read_generation_config(out) == conv.read_generation_config(src)
  model, info = hf.WhisperForConditionalGeneration.from_pretrained(out, output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  assert not info["mismatched_keys"], info
  _assert_logits_match(model, config, params)


@pytest.mark.torch
def test_tied_proj_out_present_equal_or_different(hf, tmp_path):
  """A tied checkpoint may store proj_out.weight: equal to the embedding it is the embedding;
  different, transformers unties it, and so do we (same logits)."""
  src = whisper_tiny.save(whisper_tiny.hf_model("en"), tmp_path / "src")
  state = load_file(os.path.join(src, "model.safetensors"))
  embed = state["model.decoder.embed_tokens.weight"]
  _, ref_params = conv.load_hf_folder(src)
  for name, proj in (("equal", embed.copy()), ("different", embed[::-1].copy())):
    folder = str(tmp_path / name)
    shutil.copytree(src, folder)
    save_file({**state, "proj_out.weight": proj}, os.path.join(folder, "model.safetensors"),
              metadata={"format": "pt"})
    config, params = conv.load_hf_folder(folder)
    if name == "equal":
      assert config.tie_word_embeddings
      _assert_same_params(params, ref_params)
      continue
    assert not config.tie_word_embeddings
    np.testing.assert_array_equal(params["proj_out"]["kernel"], proj.T)
    _assert_logits_match(hf.WhisperForConditionalGeneration.from_pretrained(folder), config,
                         params)
    # Saved untied: proj_out.weight written, and read back the same.
    again = conv.save_hf_folder(config, params, str(tmp_path / "again"))
    assert "proj_out.weight" in load_file(os.path.join(again, "model.safetensors"))
    _assert_same_params(conv.load_hf_folder(again)[1], params)


def _our_folder(tmp_path, config=None) -> tuple[str, w.WhisperConfig, dict]:
  config = config or _config()
  params = w.init_params(config, seed=0)
  return conv.save_hf_folder(config, params, str(tmp_path / "ours")), config, params


def test_save_load_round_trip_and_untied(tmp_path):
  for tie in (True, False):
    folder, config, params = _our_folder(tmp_path / str(tie), _config(tie_word_embeddings=tie))
    config2, params2 = conv.load_hf_folder(folder)
    assert config2 == config
    _assert_same_params(params2, params)
    keys = load_file(os.path.join(folder, "model.safetensors")).keys()
    assert ("proj_out.weight" in keys) == (not tie)
    assert len(keys) == len(_flat(params))


def test_missing_and_extra_tensors_are_named(tmp_path):
  folder, _, _ = _our_folder(tmp_path)
  path = os.path.join(folder, "model.safetensors")
  state = load_file(path)
  del state["model.decoder.layers.1.encoder_attn.v_proj.bias"]
  state["model.encoder.layers.7.fc1.weight"] = np.zeros((96, 64), np.float32)
  save_file(state, path)
  with pytest.raises(conv.CheckpointMismatchError) as e:
    conv.load_hf_folder(folder)
  msg = str(e.value)
  assert "missing keys: model.decoder.layers.1.encoder_attn.v_proj.bias" in msg
  assert "unexpected keys: model.encoder.layers.7.fc1.weight" in msg
  assert "model.safetensors" in msg


def test_wrong_shape_and_k_proj_bias_are_named(tmp_path):
  folder, _, _ = _our_folder(tmp_path)
  path = os.path.join(folder, "model.safetensors")
  state = load_file(path)
  state["model.encoder.conv1.weight"] = np.zeros((64, 128, 3), np.float32)  # 128 mels
  state["model.encoder.layers.0.self_attn.k_proj.bias"] = np.zeros(64, np.float32)
  save_file(state, path)
  with pytest.raises(conv.CheckpointMismatchError,
                     match=r"unexpected keys: model.encoder.layers.0.self_attn.k_proj.bias.*"
                           r"wrong shapes: model.encoder.conv1.weight: \(64, 128, 3\) "
                           r"\(expected \(64, 80, 3\)\)"):
    conv.load_hf_folder(folder)


def test_not_whisper_is_named(tmp_path):
  folder, _, _ = _our_folder(tmp_path)
  cfg_path = os.path.join(folder, "config.json")
  with open(cfg_path, encoding="utf-8") as f:
    cfg = json.load(f)
  cfg["model_type"] = "wav2vec2"
  with open(cfg_path, "w", encoding="utf-8") as f:
    json.dump(cfg, f)
  with pytest.raises(ValueError,
                     match=re.escape(f"{folder} holds a model_type='wav2vec2' checkpoint")):
    conv.load_hf_folder(folder)
  with pytest.raises(FileNotFoundError, match="is not a folder"):
    conv.load_hf_folder(str(tmp_path / "nowhere"))


def test_sharded_checkpoint(tmp_path):
  folder, config, params = _our_folder(tmp_path)
  state = load_file(os.path.join(folder, "model.safetensors"))
  os.remove(os.path.join(folder, "model.safetensors"))
  keys = sorted(state)
  shards = {"model-00001-of-00002.safetensors": keys[::2],
            "model-00002-of-00002.safetensors": keys[1::2]}
  weight_map = {}
  for name, part in shards.items():
    save_file({k: state[k] for k in part}, os.path.join(folder, name), metadata={"format": "pt"})
    weight_map.update({k: name for k in part})
  with open(os.path.join(folder, "model.safetensors.index.json"), "w", encoding="utf-8") as f:
    json.dump({"metadata": {}, "weight_map": weight_map}, f)
  config2, params2 = conv.load_hf_folder(folder)
  assert config2 == config
  _assert_same_params(params2, params)
