"""Tests of the Flax Whisper (distill_jax/models/whisper.py).

Reference tests (marker `torch`) compare with transformers' PyTorch
`WhisperForConditionalGeneration` on tiny random checkpoints (tests/models/whisper_tiny.py):
every encoder hidden state and the logits within ATOL = 1e-4 absolute, float32. The KV-cache
tests compare incremental decoding with the full forward of our own model (1e-5).

The slow test (marker `slow`) runs the real Whisper tiny.en (whisper_tiny.REAL_FOLDER) on a
vendored LibriVox clip, with the same tolerance, and prints the largest differences (it skips,
saying how to make the folder, when it is absent).
"""

from __future__ import annotations

import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.models import whisper as w
from tests.models import whisper_tiny
from tests.models.whisper_tiny import hf_fixture  # noqa: F401  pylint: disable=unused-import

ATOL = 1e-4  # float32, absolute: logits and every encoder hidden state vs transformers.
CACHE_ATOL = 1e-5  # incremental (KV cache) vs full forward, both ours.


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _forward(config: w.WhisperConfig, dtype, allow_shorter: bool, params, feats, ids):
  """Our full forward, compiled once per (config, dtype, shapes) and shared by the tests."""
  return w.WhisperForConditionalGeneration(config, dtype=dtype).apply(
      {"params": params}, feats, ids, allow_shorter=allow_shorter)


def _flax_params(model):
  """Params straight from the torch state dict (the converter is tested in tests/convert)."""
  from distill_jax.convert import hf_whisper  # pylint: disable=import-outside-toplevel
  config = w.WhisperConfig.from_hf_dict(model.config.to_dict())
  state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  return hf_whisper.state_dict_to_params(config, state)


@pytest.mark.torch
def test_matches_transformers(hf):
  """The real window (3000 frames, max_source_positions 1500), large-v3's 128 mel bins and a
  multilingual prompt in one checkpoint (one compile)."""
  del hf
  model = whisper_tiny.hf_model("multi", max_source_positions=1500, num_mel_bins=128)
  config, params = _flax_params(model)
  feats = whisper_tiny.features(2, config.num_frames, config.num_mel_bins)
  assert feats.shape == (2, 3000, 128)
  ids = np.array([[251, 252, 255, 259, 5, 17, 99, 250], [251, 252, 255, 259, 230, 8, 42, 42]])
  ref = whisper_tiny.hf_forward(model, feats, ids)
  out = _forward(config, jnp.float32, False, params, feats, ids.astype(np.int32))
  hidden = np.asarray(out["encoder_hidden_states"])
  assert hidden.shape[0] == len(ref["hidden"]) == config.encoder_layers + 1
  for i, (a, b) in enumerate(zip(hidden, ref["hidden"])):
    np.testing.assert_allclose(a, b, atol=ATOL, rtol=0, err_msg=f"encoder hidden state {i}")
  np.testing.assert_allclose(np.asarray(out["encoder_last_hidden_state"]), ref["last"],
                             atol=ATOL, rtol=0)
  assert out["logits"].dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(out["logits"]), ref["logits"], atol=ATOL, rtol=0)


@pytest.mark.torch
def test_shorter_window_matches_transformers_on_truncated_positions(hf):
  """A 120-frame window (of 200) equals transformers' model whose max_source_positions is 60
  (the same weights, positions cut to their first 60 rows): HF accepts only 2 x
  max_source_positions frames, so this is its computation of a shortened window."""
  del hf
  model = whisper_tiny.hf_model("en")
  config, params = _flax_params(model)
  short = whisper_tiny.hf_model("en", max_source_positions=60)
  state = model.state_dict()
  state["model.encoder.embed_positions.weight"] = state[
      "model.encoder.embed_positions.weight"][:60]
  short.load_state_dict(state)
  feats = whisper_tiny.features(2, 120)
  ids = np.array([[251, 259, 5, 6]] * 2)
  ref = whisper_tiny.hf_forward(short, feats, ids)
  flax_model = w.WhisperForConditionalGeneration(config)
  out = _forward(config, jnp.float32, True, params, feats, ids.astype(np.int32))
  for a, b in zip(np.asarray(out["encoder_hidden_states"]), ref["hidden"]):
    np.testing.assert_allclose(a, b, atol=ATOL, rtol=0)
  np.testing.assert_allclose(np.asarray(out["logits"]), ref["logits"], atol=ATOL, rtol=0)
  with pytest.raises(ValueError, match=r"takes 200 mel frames .*got 120.*allow_shorter"):
    flax_model.apply({"params": params}, feats, ids.astype(np.int32))
  with pytest.raises(ValueError, match="got 202"):
    flax_model.apply({"params": params}, whisper_tiny.features(1, 202), ids[:1].astype(np.int32),
                     allow_shorter=True)


def test_kv_cache_matches_full_forward():
  """Logits of one token per decoder call, with three rows per utterance (beam rows sharing
  their utterance's cross K/V), equal the full forward's (whose features and ids the bf16 test
  shares, so the forward compiles once)."""
  config = whisper_tiny.flax_config()
  params = w.init_params(config, seed=1)
  model = w.WhisperForConditionalGeneration(config)
  feats, ids = _shared_inputs(config)
  full = _forward(config, jnp.float32, False, params, feats, ids)
  t, g = ids.shape[1], 3
  cache = jax.jit(lambda p, e: model.apply({"params": p}, e, t + 2, g, method=model.init_cache))(
      params, full["encoder_last_hidden_state"])
  assert cache["self_k"][0].shape == (2 * g, 4, t + 2, 16)          # [B*G, H, T_max, hd]
  assert cache["cross_k"][0].shape == (2, 4, config.max_source_positions, 16)   # [B, H, S, hd]
  step = jax.jit(lambda p, tok, cache, i: model.apply({"params": p}, tok, cache, i,
                                                      method=model.decode))
  rows = np.repeat(ids, g, axis=0)
  pieces = []
  for i in range(t):
    logits, cache = step(params, rows[:, i:i + 1], cache, i)
    pieces.append(logits)
  np.testing.assert_allclose(np.concatenate(pieces, 1), np.repeat(full["logits"], g, 0),
                             atol=CACHE_ATOL, rtol=0)


def _shared_inputs(config: w.WhisperConfig) -> tuple[np.ndarray, np.ndarray]:
  """Features [2, 200, 80] and decoder ids [2, 7] of the KV-cache and bf16 tests."""
  feats = whisper_tiny.features(2, config.num_frames)
  ids = np.array([[251, 259, 5, 17, 99, 3, 250], [251, 259, 230, 8, 42, 42, 7]], np.int32)
  return feats, ids


def test_bf16_compute_keeps_float32_logits():
  config = whisper_tiny.flax_config()
  params = w.init_params(config, seed=2)
  feats, ids = _shared_inputs(config)
  ref = _forward(config, jnp.float32, False, params, feats, ids)
  out = _forward(config, jnp.bfloat16, False, params, feats, ids)
  assert out["logits"].dtype == jnp.float32
  assert out["encoder_last_hidden_state"].dtype == jnp.bfloat16
  # bf16 has an 8-bit mantissa: logits agree to a few percent of their spread.
  err = np.abs(np.asarray(out["logits"]) - np.asarray(ref["logits"])).max()
  assert err < 0.05 * np.ptp(np.asarray(ref["logits"])), err


def test_self_attention_blocks_match_one_piece_softmax():
  """The encoder's blocked attention (`self_attention`: query blocks, T padded to whole blocks,
  division after the value product) against softmax(q k^T) v in float64, within 1e-5."""
  rng = np.random.RandomState(0)
  q, k, v = (2 * rng.randn(2, 3, 37, 8).astype(np.float32) for _ in range(3))
  scores = np.einsum("bhtd,bhsd->bhts", q.astype(np.float64), k)
  probs = np.exp(scores - scores.max(-1, keepdims=True))
  ref = np.einsum("bhts,bhsd->bhtd", probs / probs.sum(-1, keepdims=True), v)
  for block in (5, 10, 100):  # many blocks, a padded last block (37 = 3 x 10 + 7), block > T
    out = jax.jit(functools.partial(w.self_attention, block=block))(q, k, v)
    assert out.shape == (2, 3, 37, 8) and out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5, rtol=0, err_msg=f"block={block}")
  with pytest.raises(ValueError, match="do not match"):
    w.self_attention(q, k[:, :, :5], v)


def test_gelu_is_exact_gelu():
  """The erf form of the exact GELU against erf in float64 and jax.nn.gelu's erfc form."""
  gelu = w._ACTIVATIONS["gelu"]  # pylint: disable=protected-access
  x = np.linspace(-12, 12, 20001, dtype=np.float32)
  ref = x * 0.5 * (1 + np.vectorize(math.erf)(x.astype(np.float64) / math.sqrt(2)))
  out = np.asarray(jax.jit(gelu)(x))
  np.testing.assert_allclose(out, ref, atol=2e-6, rtol=1e-6)
  np.testing.assert_allclose(out, np.asarray(jax.nn.gelu(x, approximate=False)), atol=2e-6,
                             rtol=1e-6)
  assert jax.jit(gelu)(x.astype(jnp.bfloat16)).dtype == jnp.bfloat16


def test_config_round_trip_and_errors():
  config = whisper_tiny.flax_config(num_mel_bins=128, suppress_tokens=[1, 2],
                                    tie_word_embeddings=True)
  hf_dict = {**config.to_hf_dict(), "dropout": 0.1, "transformers_version": "5.23.0"}
  again = w.WhisperConfig.from_hf_dict(hf_dict)
  assert again == config and again.extra["dropout"] == 0.1
  assert again.to_hf_dict() == {**hf_dict}
  assert json.loads(json.dumps(again.to_hf_dict())) == again.to_hf_dict()
  # transformers writes only values that differ from its defaults: missing keys take them.
  assert w.WhisperConfig.from_hf_dict({"model_type": "whisper"}) == w.WhisperConfig()
  assert w.WhisperConfig.from_hf_dict({"hidden_size": 64, "encoder_attention_heads": 4,
                                       "decoder_attention_heads": 4}).d_model == 64
  with pytest.raises(ValueError, match="model_type='wav2vec2'"):
    w.WhisperConfig.from_hf_dict({"model_type": "wav2vec2"})
  with pytest.raises(ValueError, match="d_model=60 is not divisible by encoder_attention_heads=8"):
    whisper_tiny.flax_config(d_model=60, encoder_attention_heads=8)
  with pytest.raises(ValueError, match="activation_function='mish'"):
    whisper_tiny.flax_config(activation_function="mish")
  with pytest.raises(ValueError, match=r"features must be \[B, T, 80\]"):
    w.WhisperForConditionalGeneration(whisper_tiny.flax_config()).apply(
        {"params": w.init_params(whisper_tiny.flax_config())}, np.zeros((1, 200, 128), np.float32),
        np.zeros((1, 1), np.int32))


def test_init_params_tree_matches_module():
  config = whisper_tiny.flax_config(tie_word_embeddings=False)
  params = w.init_params(config)
  shapes = jax.tree.map(lambda s: s.shape, w.param_shapes(config))
  assert jax.tree.map(np.shape, params) == shapes
  assert params["proj_out"]["kernel"].shape == (64, 300)
  np.testing.assert_array_equal(params["model"]["encoder"]["embed_positions"]["embedding"],
                                w.sinusoids(100, 64))
  assert "proj_out" not in w.param_shapes(whisper_tiny.flax_config())


# --- real checkpoint -----------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.torch
def test_real_tiny_en_matches_transformers(hf):
  """Whisper tiny.en (whisper_tiny.REAL_FOLDER) on a real LibriVox clip, the decoder fed the
  prompt + transformers' greedy transcript: every encoder hidden state and the logits within
  ATOL of transformers in float32. Also printed: both against transformers run in float64."""
  import torch  # pylint: disable=import-outside-toplevel
  from distill_jax.audio import whisper_features  # pylint: disable=import-outside-toplevel
  from distill_jax.convert import hf_whisper  # pylint: disable=import-outside-toplevel
  from distill_jax.decode import whisper as decode  # pylint: disable=import-outside-toplevel
  folder = whisper_tiny.real_folder()
  clip, audio = whisper_tiny.real_clips()[0]
  config, params = hf_whisper.load_hf_folder(folder)
  settings = decode.decode_settings(config, hf_whisper.read_generation_config(folder))
  feats, _ = whisper_features.log_mel_spectrogram(audio[None], num_mels=config.num_mel_bins)
  feats = np.asarray(feats)
  model = hf.WhisperForConditionalGeneration.from_pretrained(folder).eval()
  with torch.inference_mode():
    generated = model.generate(input_features=torch.tensor(feats.transpose(0, 2, 1)),
                               max_new_tokens=100).numpy()
  start = np.array([settings.prompt])
  if np.array_equal(generated[:, :start.shape[1]], start):  # generate may return the prompt
    generated = generated[:, start.shape[1]:]
  ids = np.concatenate([start, generated], axis=1)
  assert ids.shape[1] > 10, ids
  ref = whisper_tiny.hf_forward(model, feats, ids)
  with torch.inference_mode():
    exact = model.double()(input_features=torch.tensor(feats.transpose(0, 2, 1)).double(),
                           decoder_input_ids=torch.tensor(ids)).logits.numpy()
  out = jax.jit(w.WhisperForConditionalGeneration(config).apply)(
      {"params": params}, feats, ids.astype(np.int32))
  diffs = [float(np.abs(np.asarray(a) - b).max())
           for a, b in zip(out["encoder_hidden_states"], ref["hidden"])]
  logits = np.asarray(out["logits"])
  vs_hf, vs_exact = (float(np.abs(logits - r).max()) for r in (ref["logits"], exact))
  hf_vs_exact = float(np.abs(ref["logits"] - exact).max())
  print(f"\n{clip}: {ids.shape[1]} decoder tokens; max |diff| per encoder hidden state "
        f"{['%.2e' % d for d in diffs]}; logits: ours vs transformers {vs_hf:.2e}, ours vs "
        f"float64 {vs_exact:.2e}, transformers vs float64 {hf_vs_exact:.2e} (max |logit| "
        f"{np.abs(exact).max():.1f})")
  assert len(diffs) == config.encoder_layers + 1
  assert max(diffs) < ATOL and vs_hf < ATOL
