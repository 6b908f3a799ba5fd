"""Tests of the HF <-> Flax wav2vec2 converter (distill_jax/convert/hf_wav2vec2.py).

Reference tests (marker `torch`) build tiny random transformers checkpoints with
`save_pretrained`. Numerical tolerance: 1e-4 absolute on float32 logits (valid frames).
The strictness and hub tests need no torch: their checkpoints are written by our exporter.
"""

import hashlib
import json
import os
import sys

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from distill_jax import text
from distill_jax.convert import hf_wav2vec2 as conv
from distill_jax.models import wav2vec2 as w2v

ATOL = 1e-4  # float32 logits, absolute.
POS_CONV = "wav2vec2.encoder.pos_conv_embed.conv"


def tiny_config(family: str = "layer", **kw) -> w2v.Wav2Vec2Config:
  fam = (dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)
         if family == "layer" else
         dict(feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False))
  base = dict(vocab_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=48, conv_dim=(16, 16, 16), conv_stride=(5, 2, 2),
              conv_kernel=(10, 3, 2), num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4)
  return w2v.Wav2Vec2Config(**{**base, **fam, **kw})


def batch():
  rng = np.random.RandomState(0)
  x = (0.5 * rng.randn(3, 4000)).astype(np.float32)
  pad = np.zeros_like(x)
  for i, n in enumerate((4000, 3100, 2500)):
    pad[i, n:] = 1.0
    x[i, n:] = 0.0
  return x, pad


@pytest.fixture(name="hf")
def _hf():
  pytest.importorskip("torch", reason="reference test needs torch (requirements-reference.txt)")
  return pytest.importorskip("transformers", reason="reference test needs transformers")


def hf_tiny_model(family: str, seed: int = 0):
  """Random transformers Wav2Vec2ForCTC (random layer norms too, so every tensor matters)."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  torch.manual_seed(seed)
  cfg = {k: v for k, v in tiny_config(family).to_hf_dict().items()
         if k not in ("architectures", "model_type")}
  model = transformers.Wav2Vec2ForCTC(transformers.Wav2Vec2Config(**cfg)).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "layer_norm" in name or name.endswith("bias"):
        p.add_(0.2 * torch.randn_like(p))
  return model


def hf_logits(model, x, pad, with_mask):
  import torch  # pylint: disable=import-outside-toplevel
  mask = torch.tensor((1 - pad).astype(np.int64)) if with_mask else None
  with torch.inference_mode():
    return model(torch.tensor(x), attention_mask=mask).logits.numpy()


def flat(params):
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  return {jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves}


def assert_same_params(a, b):
  fa, fb = flat(a), flat(b)
  assert fa.keys() == fb.keys()
  for k in fa:
    np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)


def write_exported(tmp_path, name="ckpt", family="layer", **kw):
  cfg = tiny_config(family, **kw)
  return cfg, conv.export_hf_folder(cfg, w2v.init_params(cfg, 0), text.CharTokenizer(),
                                    str(tmp_path / name))


# --- reference tests -----------------------------------------------------------------------------

@pytest.mark.torch
@pytest.mark.parametrize("family", ["layer", "group"])
def test_formats_and_weight_norm_namings_load_identically(hf, tmp_path, family):
  """save_pretrained safetensors == pytorch_model.bin == legacy weight_g/weight_v naming."""
  del hf
  import torch  # pylint: disable=import-outside-toplevel
  model = hf_tiny_model(family)
  ref_dir = str(tmp_path / "st")
  model.save_pretrained(ref_dir)
  text.CharTokenizer().save(ref_dir)
  _, ref, _ = conv.load_hf_folder(ref_dir)
  state = {k: v.detach().clone() for k, v in model.state_dict().items()}
  assert f"{POS_CONV}.parametrizations.weight.original0" in state
  legacy = {k.replace("parametrizations.weight.original0", "weight_g")
             .replace("parametrizations.weight.original1", "weight_v"): v
            for k, v in state.items()}
  for name, sd in (("bin", state), ("bin_legacy", legacy), ("st_legacy", legacy)):
    folder = tmp_path / name
    folder.mkdir()
    for f in ("config.json", "vocab.json"):
      (folder / f).write_text((tmp_path / "st" / f).read_text())
    if name.startswith("bin"):
      torch.save(sd, folder / conv.PYTORCH_BIN)
    else:
      save_file({k: v.numpy() for k, v in sd.items()}, str(folder / conv.SAFETENSORS),
                metadata={"format": "pt"})
    _, params, _ = conv.load_hf_folder(str(folder))
    assert_same_params(params, ref)


@pytest.mark.torch
@pytest.mark.parametrize("family", ["layer", "group"])
def test_hf_to_flax_to_hf_round_trip(hf, tmp_path, family):
  model = hf_tiny_model(family, seed=1)
  src = str(tmp_path / "src")
  model.save_pretrained(src)
  text.CharTokenizer().save(src)
  cfg, params, tok = conv.load_hf_folder(src)
  out = conv.export_hf_folder(cfg, params, tok, str(tmp_path / "out"))
  again, info = hf.Wav2Vec2ForCTC.from_pretrained(out, output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  assert not info["mismatched_keys"], info
  x, pad = batch()
  with_mask = family == "layer"
  np.testing.assert_allclose(hf_logits(again.eval(), x, pad, with_mask),
                             hf_logits(model, x, pad, with_mask), atol=ATOL)
  # Our reader gets back exactly what we exported, and the config survives.
  cfg2, params2, tok2 = conv.load_hf_folder(out)
  assert cfg2 == cfg and tok2.vocab == tok.vocab
  assert_same_params(params2, params)
  processor = hf.Wav2Vec2Processor.from_pretrained(out)
  ids = tok.encode("HELLO WORLD")
  assert processor.tokenizer("HELLO WORLD").input_ids == ids
  assert processor.tokenizer.decode(ids, group_tokens=False) == tok.decode(ids) == "HELLO WORLD"
  assert processor.feature_extractor.return_attention_mask == with_mask


@pytest.mark.torch
def test_flax_params_export_matches_flax_forward(hf, tmp_path):
  """Random Flax params -> export -> transformers gives our logits within 1e-4."""
  cfg, out = write_exported(tmp_path, num_conv_pos_embeddings=7)  # odd kernel too
  model = hf.Wav2Vec2ForCTC.from_pretrained(out).eval()
  x, pad = batch()
  params = w2v.init_params(cfg, 0)
  ours = jax.jit(w2v.Wav2Vec2ForCTC(cfg).apply)({"params": params}, x, pad)
  valid = np.asarray(ours["frame_paddings"]) < 0.5
  ref = hf_logits(model, x, pad, with_mask=True)
  assert float(np.abs(np.asarray(ours["logits"]) - ref)[valid].max()) < ATOL


# --- strictness ----------------------------------------------------------------------------------

def _edit_weights(folder, fn):
  path = os.path.join(folder, conv.SAFETENSORS)
  state = load_file(path)
  fn(state)
  save_file(state, path, metadata={"format": "pt"})


def test_extra_key_is_named(tmp_path):
  _, folder = write_exported(tmp_path)
  _edit_weights(folder, lambda s: s.update({"wav2vec2.encoder.layers.7.extra.weight":
                                            np.zeros(3, np.float32)}))
  with pytest.raises(conv.CheckpointMismatchError,
                     match=r"unexpected keys: wav2vec2\.encoder\.layers\.7\.extra\.weight"):
    conv.load_hf_folder(folder)


def test_missing_key_is_named(tmp_path):
  _, folder = write_exported(tmp_path)
  _edit_weights(folder, lambda s: s.pop("wav2vec2.encoder.layers.1.final_layer_norm.bias"))
  with pytest.raises(conv.CheckpointMismatchError,
                     match=r"missing keys: wav2vec2\.encoder\.layers\.1\.final_layer_norm\.bias"):
    conv.load_hf_folder(folder)


def test_missing_weight_norm_names_both_namings(tmp_path):
  _, folder = write_exported(tmp_path)
  _edit_weights(folder, lambda s: s.pop(f"{POS_CONV}.parametrizations.weight.original1"))
  with pytest.raises(conv.CheckpointMismatchError, match="original1 or .*weight_v"):
    conv.load_hf_folder(folder)


def test_both_weight_norm_namings_is_an_error(tmp_path):
  _, folder = write_exported(tmp_path)
  _edit_weights(folder, lambda s: s.update(
      {f"{POS_CONV}.weight_g": s[f"{POS_CONV}.parametrizations.weight.original0"]}))
  with pytest.raises(conv.CheckpointMismatchError, match="both weight-norm namings"):
    conv.load_hf_folder(folder)


def test_wrong_shape_is_named(tmp_path):
  _, folder = write_exported(tmp_path)
  _edit_weights(folder, lambda s: s.update({"lm_head.weight": np.zeros((31, 32), np.float32)}))
  with pytest.raises(conv.CheckpointMismatchError,
                     match=r"lm_head\.weight: \(31, 32\) \(expected \(32, 32\)\)"):
    conv.load_hf_folder(folder)


def test_masked_spec_embed_follows_config(tmp_path):
  cfg, folder = write_exported(tmp_path)  # mask_time_prob=0.05 by default: carried.
  assert "wav2vec2.masked_spec_embed" in load_file(os.path.join(folder, conv.SAFETENSORS))
  cfg0, folder0 = write_exported(tmp_path, "nomask", mask_time_prob=0.0)
  assert "wav2vec2.masked_spec_embed" not in load_file(os.path.join(folder0, conv.SAFETENSORS))
  # A checkpoint with the vector but a config without SpecAugment is inconsistent: named.
  _edit_weights(folder0, lambda s: s.update(
      {"wav2vec2.masked_spec_embed": np.zeros(cfg.hidden_size, np.float32)}))
  with pytest.raises(conv.CheckpointMismatchError, match="unexpected keys: wav2vec2.masked_spec"):
    conv.load_hf_folder(folder0)
  del cfg0


def test_export_rejects_incomplete_params(tmp_path):
  cfg = tiny_config()
  params = w2v.init_params(cfg, 0)
  del params["wav2vec2"]["encoder"]["layers_1"]["attention"]["q_proj"]["bias"]
  with pytest.raises(conv.CheckpointMismatchError,
                     match="missing params: wav2vec2/encoder/layers_1/attention/q_proj/bias"):
    conv.export_hf_folder(cfg, params, text.CharTokenizer(), str(tmp_path / "x"))


def test_bin_without_torch_gives_clear_error(tmp_path, monkeypatch):
  _, folder = write_exported(tmp_path)
  os.rename(os.path.join(folder, conv.SAFETENSORS), os.path.join(folder, conv.PYTORCH_BIN))
  monkeypatch.setitem(sys.modules, "torch", None)
  with pytest.raises(ImportError, match="needs torch"):
    conv.load_hf_folder(folder)


# --- hub ids -------------------------------------------------------------------------------------

HUB_ID = "facebook/wav2vec2-large-robust-ft-libri-960h"


def test_hub_id_offline_gives_download_instructions(tmp_path, monkeypatch):
  """No network traffic: HF_HUB_OFFLINE makes huggingface_hub look only in its (empty) cache."""
  pytest.importorskip("huggingface_hub")
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  monkeypatch.chdir(tmp_path)  # so the id is not a relative path that exists
  with pytest.raises(FileNotFoundError,
                     match=f"huggingface-cli download {HUB_ID} --local-dir DIR") as e:
    conv.load_hf_folder(HUB_ID)
  assert "HF_HUB_OFFLINE" in str(e.value)


def test_hub_id_without_huggingface_hub(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "huggingface_hub", None)
  monkeypatch.chdir(tmp_path)
  with pytest.raises(FileNotFoundError, match="huggingface_hub is not installed.*--local-dir"):
    conv.load_hf_folder(HUB_ID)


def test_missing_local_path(tmp_path):
  with pytest.raises(FileNotFoundError, match="not a folder"):
    conv.load_hf_folder(str(tmp_path / "nope" / "x"))


# --- converted teacher ---------------------------------------------------------------------------

def test_convert_teacher_launcher_writes_orbax_and_hash(tmp_path):
  # A child process: absl flags are process-global, and other test files import modules that
  # define flags of the same names (e.g. --out).
  import subprocess  # pylint: disable=import-outside-toplevel
  cfg, folder = write_exported(tmp_path, family="group")
  out = str(tmp_path / "teacher")
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  proc = subprocess.run([sys.executable, "-m", "launch.convert_teacher", f"--hf={folder}",
                         f"--out={out}"], cwd=repo, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(folder, conv.SAFETENSORS), "rb") as f:
    sha = hashlib.sha256(f.read()).hexdigest()
  with open(os.path.join(out, conv.TEACHER_META)) as f:
    meta = json.load(f)
  assert meta["source_sha256"] == sha == conv.weights_sha256(folder)
  assert meta["source"] == folder and meta["format"] == "orbax"
  cfg2, params, tok, meta2 = conv.load_teacher(out)
  assert cfg2 == cfg and not cfg2.attention_mask and tok.vocab == text.DEFAULT_VOCAB
  assert meta2 == meta
  assert_same_params(params, conv.load_hf_folder(folder)[1])
