"""Tests of the Flax wav2vec2 teacher (distill_jax/models/wav2vec2.py).

Reference tests (marker `torch`) build tiny random transformers `Wav2Vec2ForCTC` checkpoints of
both families with `save_pretrained`, convert them and compare logits and all hidden states with
transformers' PyTorch model in eval mode on a padded batch of three utterances.
Tolerance: 1e-4 absolute, float32, on valid (non-padded) frames.
"""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import text
from distill_jax.models import wav2vec2 as w2v

ATOL = 1e-4  # float32, absolute, valid frames only.
LENGTHS = (4000, 3000, 2345)  # samples; padded to 4000 -> 199 frames with strides (5, 2, 2).


def tiny_config(family: str, pos_kernel: int = 16, **kw) -> w2v.Wav2Vec2Config:
  fam = (dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)
         if family == "layer" else
         dict(feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False))
  base = dict(vocab_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=64, conv_dim=(16, 16, 16), conv_stride=(5, 2, 2),
              conv_kernel=(10, 3, 2), num_conv_pos_embeddings=pos_kernel,
              num_conv_pos_embedding_groups=4)
  base.update(fam)
  base.update(kw)
  return w2v.Wav2Vec2Config(**base)


def padded_batch(lengths=LENGTHS, seed=0):
  rng = np.random.RandomState(seed)
  s = max(lengths)
  x = (0.5 * rng.randn(len(lengths), s)).astype(np.float32)
  pad = np.zeros_like(x)
  for i, n in enumerate(lengths):
    pad[i, n:] = 1.0
    x[i, n:] = 0.0
  return x, pad


def make_hf_folder(tmp_path, config: w2v.Wav2Vec2Config, seed: int = 0,
                   return_attention_mask: bool | None = None):
  """A random transformers Wav2Vec2ForCTC saved with save_pretrained (+ vocab.json)."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  torch.manual_seed(seed)
  hf_cfg = transformers.Wav2Vec2Config(**{k: v for k, v in config.to_hf_dict().items()
                                          if k not in ("architectures", "model_type")})
  model = transformers.Wav2Vec2ForCTC(hf_cfg).eval()
  with torch.no_grad():  # Weights large enough that every layer matters.
    for name, p in model.named_parameters():
      if "original0" in name or "weight_g" in name:
        p.uniform_(0.5, 1.5)
      elif "layer_norm" in name and name.endswith("weight"):
        p.copy_(1.0 + 0.2 * torch.randn_like(p))
      elif p.ndim == 1:
        p.normal_(0.0, 0.2)
      else:
        p.normal_(0.0, float(p[0].numel()) ** -0.5)
  folder = str(tmp_path / f"hf_{config.feat_extract_norm}_{config.num_conv_pos_embeddings}")
  model.save_pretrained(folder)
  text.CharTokenizer().save(folder)
  if return_attention_mask is not None:
    with open(os.path.join(folder, "preprocessor_config.json"), "w") as f:
      json.dump({"feature_extractor_type": "Wav2Vec2FeatureExtractor", "do_normalize": True,
                 "return_attention_mask": return_attention_mask, "sampling_rate": 16000}, f)
  return model, folder


def hf_forward(model, x, pad, with_mask: bool):
  import torch  # pylint: disable=import-outside-toplevel
  mask = torch.tensor((1 - pad).astype(np.int64)) if with_mask else None
  with torch.inference_mode():
    out = model(torch.tensor(x), attention_mask=mask, output_hidden_states=True)
    last = model.wav2vec2(torch.tensor(x), attention_mask=mask).last_hidden_state
  return (out.logits.numpy(), np.stack([h.numpy() for h in out.hidden_states]), last.numpy())


@pytest.fixture(name="hf")
def _hf():
  pytest.importorskip("torch", reason="reference test needs torch (requirements-reference.txt)")
  return pytest.importorskip("transformers", reason="reference test needs transformers")


@functools.lru_cache(maxsize=None)
def _jitted(cfg: w2v.Wav2Vec2Config, dtype=jnp.float32, deterministic: bool = True):
  """Jitted forward, shared across tests (eager Flax is slow; compiles dominate test time)."""
  model = w2v.Wav2Vec2ForCTC(cfg, dtype=dtype)
  if deterministic:
    return jax.jit(lambda p, x, m: model.apply({"params": p}, x, m))
  return jax.jit(lambda p, x, m, r: model.apply({"params": p}, x, m, deterministic=False,
                                                rngs={"dropout": r}))


def _apply(model, params, *args):
  return _jitted(model.config, model.dtype)(params, *args)


def _max_diff(a, b, valid):
  return float(np.abs(np.asarray(a, np.float32) - b)[..., valid, :].max())


@pytest.mark.torch
@pytest.mark.parametrize("family,pos_kernel", [("layer", 16), ("group", 16), ("layer", 15),
                                               ("group", 15)])
def test_matches_transformers(hf, tmp_path, family, pos_kernel):
  del hf
  from distill_jax.convert import hf_wav2vec2  # pylint: disable=import-outside-toplevel
  model, folder = make_hf_folder(tmp_path, tiny_config(family, pos_kernel))
  cfg, params, _ = hf_wav2vec2.load_hf_folder(folder)
  assert cfg.attention_mask == (family == "layer")
  x, pad = padded_batch()
  ref_logits, ref_hidden, ref_last = hf_forward(model, x, pad, cfg.attention_mask)
  out = _apply(w2v.Wav2Vec2ForCTC(cfg), params, x, pad)
  fp = np.asarray(out["frame_paddings"])
  assert out["logits"].shape == ref_logits.shape == (3, 199, 32)
  assert out["hidden_states"].shape == ref_hidden.shape == (3, 3, 199, 32)
  np.testing.assert_array_equal((fp < 0.5).sum(1), [199, 149, 116])
  valid = fp < 0.5
  assert _max_diff(out["logits"], ref_logits, valid) < ATOL
  for i in range(ref_hidden.shape[0]):
    assert _max_diff(out["hidden_states"][i], ref_hidden[i], valid) < ATOL, f"hidden state {i}"
  assert _max_diff(out["last_hidden_state"], ref_last, valid) < ATOL
  if family == "layer":  # transformers 5: the last hidden state is before the final layer norm.
    assert _max_diff(out["hidden_states"][-1], ref_last, valid) > 1e-2


@pytest.mark.torch
def test_group_family_with_attention_mask_from_preprocessor(hf, tmp_path):
  del hf
  from distill_jax.convert import hf_wav2vec2  # pylint: disable=import-outside-toplevel
  model, folder = make_hf_folder(tmp_path, tiny_config("group"), return_attention_mask=True)
  cfg, params, _ = hf_wav2vec2.load_hf_folder(folder)
  assert cfg.attention_mask
  x, pad = padded_batch()
  ref_logits, _, _ = hf_forward(model, x, pad, with_mask=True)
  out = _apply(w2v.Wav2Vec2ForCTC(cfg), params, x, pad)
  assert _max_diff(out["logits"], ref_logits, np.asarray(out["frame_paddings"]) < 0.5) < ATOL


@pytest.mark.torch
def test_normalize_matches_feature_extractor(hf):
  x, pad = padded_batch()
  x = 3.0 * x + 0.7 * (1 - pad)
  fe = hf.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
  ref = fe([x[i, :n] for i, n in enumerate(LENGTHS)], sampling_rate=16000, padding=True,
           return_tensors="np")["input_values"]
  ours = np.asarray(w2v.normalize_waveform(x, pad))
  np.testing.assert_allclose(ours, ref, atol=1e-5)


# --- tests without torch -------------------------------------------------------------------------

def test_frame_paddings_follow_conv_formula():
  cfg = w2v.Wav2Vec2Config()  # 7 convs, 320-sample hop.
  s = 16000 * 2
  pad = np.zeros((3, s), np.float32)
  pad[1, 16000:] = 1
  pad[2, 399:] = 1
  fp = np.asarray(w2v.frame_paddings_from_paddings(cfg, jnp.asarray(pad)))
  assert fp.shape == (3, w2v.num_frames(cfg, s)) == (3, 99)
  np.testing.assert_array_equal((fp < 0.5).sum(1), [99, 49, 0])
  np.testing.assert_array_equal(w2v.conv_output_lengths(cfg, jnp.array([400, 720, 16000])),
                                [1, 2, 49])


def test_layer_family_batch_equals_single_utterances():
  cfg = tiny_config("layer")
  params = w2v.init_params(cfg, 1)
  model = w2v.Wav2Vec2ForCTC(cfg)
  x, pad = padded_batch()
  batch = _apply(model, params, x, pad)
  for i, n in enumerate(LENGTHS[2:], 2):
    single = _apply(model, params, x[i:i + 1, :n], pad[i:i + 1, :n])
    t = single["logits"].shape[1]
    np.testing.assert_allclose(batch["logits"][i, :t], single["logits"][0], atol=1e-5)
    np.testing.assert_allclose(batch["hidden_states"][:, i, :t], single["hidden_states"][:, 0],
                               atol=1e-5)


def test_bfloat16_compute_keeps_float32_logits():
  cfg = tiny_config("layer")
  params = w2v.init_params(cfg, 2)
  x, pad = padded_batch()
  ref = _apply(w2v.Wav2Vec2ForCTC(cfg), params, x, pad)
  out = _apply(w2v.Wav2Vec2ForCTC(cfg, dtype=jnp.bfloat16), params, x, pad)
  assert out["logits"].dtype == jnp.float32
  assert out["hidden_states"].dtype == jnp.bfloat16
  valid = np.asarray(ref["frame_paddings"]) < 0.5
  scale = float(np.abs(np.asarray(ref["logits"])[valid]).max())
  assert _max_diff(out["logits"], np.asarray(ref["logits"]), valid) < 0.05 * scale + 0.05


def test_dropout_only_when_not_deterministic():
  cfg = tiny_config("layer")
  params = w2v.init_params(cfg, 3)
  x, pad = padded_batch()
  a = _jitted(cfg)(params, x, pad)["logits"]
  b = _jitted(cfg, jnp.float32, False)(params, x, pad, jax.random.PRNGKey(0))["logits"]
  assert not np.allclose(a, b)


def test_config_round_trips_and_rejects_unsupported():
  cfg = tiny_config("layer")
  hf = cfg.to_hf_dict()
  hf["ctc_loss_reduction"] = "mean"
  again = w2v.Wav2Vec2Config.from_hf_dict(hf)
  assert again == cfg and again.extra == {"ctc_loss_reduction": "mean"}
  assert again.to_hf_dict() == hf
  with pytest.raises(ValueError, match="add_adapter"):
    w2v.Wav2Vec2Config.from_hf_dict({**hf, "add_adapter": True})
  with pytest.raises(ValueError, match="model_type"):
    w2v.Wav2Vec2Config.from_hf_dict({**hf, "model_type": "hubert"})
  with pytest.raises(ValueError, match="feat_extract_norm"):
    w2v.Wav2Vec2Config.from_hf_dict({**hf, "feat_extract_norm": "batch"})
  with pytest.raises(ValueError, match="hidden_act"):
    w2v.Wav2Vec2Config.from_hf_dict({**hf, "hidden_act": "mish"})
