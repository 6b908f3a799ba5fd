"""Whisper's encoder + character-CTC head (models/whisper_ctc.py) and its Teacher wrapper
(models/whisper_teacher.py), on a tiny random Whisper (d_model 64, 2 layers, a 2 s window)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from distill_jax.audio import whisper_features
from distill_jax.models import whisper as whisper_lib
from distill_jax.models import whisper_ctc
from distill_jax.models.whisper_teacher import WhisperCtcTeacher
from distill_jax.train import state as state_lib

TINY = whisper_lib.WhisperConfig(
    vocab_size=300, d_model=64, encoder_layers=2, encoder_attention_heads=4, decoder_layers=1,
    decoder_attention_heads=4, encoder_ffn_dim=96, decoder_ffn_dim=96, max_source_positions=100,
    max_target_positions=40, decoder_start_token_id=251, eos_token_id=250, pad_token_id=250,
    bos_token_id=250)  # 100 positions: a 2 s window (200 mel frames)
VOCAB = 12


def tiny_model(vocab: int = VOCAB, **kw) -> whisper_ctc.WhisperCtc:
  return whisper_ctc.WhisperCtc(TINY, vocab, **{"head_layers": 1, "head_heads": 2,
                                                "head_ffn_dim": 32, **kw})


def audio_batch(lengths, total, seed=0):
  rng = np.random.RandomState(seed)
  wav = np.zeros((len(lengths), total), np.float32)
  pad = np.ones((len(lengths), total), np.float32)
  for i, n in enumerate(lengths):
    wav[i, :n] = 0.1 * rng.randn(n)
    pad[i, :n] = 0.0
  return jnp.asarray(wav), jnp.asarray(pad)


@functools.lru_cache(maxsize=None)
def tiny_params(model):
  wav, pad = audio_batch([8000], 8000)
  return jax.jit(model.init)(jax.random.key(0), wav, pad)["params"]


def apply(model, params, wav, pad):
  return jax.jit(model.apply)({"params": params}, wav, pad)


def test_shapes_frames_and_encoder_states():
  model = tiny_model()
  params = tiny_params(model)
  wav, pad = audio_batch([16000, 9600], 16000)
  out = apply(model, params, wav, pad)
  t = model.num_frames(16000)
  assert t == 50  # 100 mel frames -> (100 - 1) // 2 + 1
  assert out["logits"].shape == (2, t, VOCAB)
  assert out["hidden_states"].shape == (3, 2, t, 64)
  # Valid frames: the first 30 of the 9600-sample row (9600 / 320), all 50 of the other.
  np.testing.assert_array_equal(np.asarray(out["paddings"]).sum(1), [0, 20])
  # The encoder states are models.whisper's on Whisper's features for this window.
  feats, _ = whisper_features.log_mel_spectrogram(wav, pad, num_samples=16000)
  ref = jax.jit(functools.partial(whisper_lib.WhisperEncoder(TINY).apply, allow_shorter=True))(
      {"params": params["encoder"]}, feats)
  np.testing.assert_allclose(out["hidden_states"], ref["hidden_states"], atol=1e-6)
  assert params["layer_weights"].shape == (3,)


def test_frozen_encoder_gets_no_gradient_and_the_head_does():
  model = tiny_model()
  params = tiny_params(model)
  wav, pad = audio_batch([8000], 8000)

  def loss(p):
    return jnp.sum(model.apply({"params": p}, wav, pad)["logits"] ** 2)

  grads = jax.jit(jax.grad(loss))(params)
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads["encoder"]))
  assert float(jnp.abs(grads["ctc_head"]["out"]["kernel"]).max()) > 0.0
  assert float(jnp.abs(grads["layer_weights"]).max()) > 0.0


@pytest.mark.parametrize("tuned", [1, 2])
def test_tuned_layers_get_gradients_and_only_they(tuned):
  """TINY has 2 layers: tuned=1 trains layers_1 + the final norm, tuned=2 every layer; the
  stem and positions never get a gradient; `frozen_encoder_params` names exactly the rest."""
  model = tiny_model(tuned_layers=tuned)
  params = tiny_params(tiny_model())
  wav, pad = audio_batch([8000], 8000)
  grads = jax.jit(jax.grad(lambda p: jnp.sum(model.apply({"params": p}, wav, pad)["logits"]
                                             ** 2)))(params)
  flat = traverse_util.flatten_dict(grads, sep="/")
  trained = {k for k, g in flat.items() if float(jnp.abs(g).max()) > 0.0}
  prefixes = whisper_ctc.tuned_encoder_prefixes(TINY.encoder_layers, tuned)
  want = {k for k in flat if not k.startswith("encoder/") or k.startswith(prefixes)}
  assert trained == want
  frozen = state_lib.frozen_labels(params, whisper_ctc.frozen_encoder_params(2, tuned))
  labels = traverse_util.flatten_dict(frozen, sep="/")
  assert {k for k, v in labels.items() if v == "train"} == want
  with pytest.raises(ValueError, match="tuned_layers=3 is not in 0..2"):
    tiny_model(tuned_layers=3).apply({"params": params}, wav, pad)


def test_audio_longer_than_the_window_is_a_named_error():
  model = tiny_model()
  with pytest.raises(ValueError, match=r"2.10 s\).*longer than the Whisper teacher's window of "
                     r"2.00 s"):
    model.num_frames(33600)
  with pytest.raises(ValueError, match="longer than the Whisper teacher's window of 1.00 s"):
    tiny_model(window_samples=16000).num_frames(17600)


def test_teacher_interface_and_padding_invariance_of_a_fixed_window():
  model = tiny_model(window_samples=32000)
  params = tiny_params(model)
  vocab = {f"c{i}": i for i in range(VOCAB)}
  teacher = WhisperCtcTeacher(model, params, vocab)
  assert teacher.padding_invariant and teacher.frame_samples == 320
  assert teacher.num_hidden_states == 3 and teacher.hidden_size == 64
  forward = jax.jit(functools.partial(teacher.forward, layers=(2, 0)))
  short = forward(params, *audio_batch([9600], 9600))
  long = forward(params, *audio_batch([9600], 16000))
  # The window's frames past the batch's length are cropped: 30 and 50 frames of 20 ms.
  assert short.log_probs.shape == (1, 30, VOCAB) and long.log_probs.shape == (1, 50, VOCAB)
  assert short.hidden.shape == (2, 1, 30, 64)
  np.testing.assert_array_equal(np.asarray(long.frame_paddings).sum(1), [20])
  np.testing.assert_allclose(short.log_probs, long.log_probs[:, :30], atol=1e-5)
  np.testing.assert_allclose(short.hidden, long.hidden[:, :, :30], atol=1e-5)
  np.testing.assert_allclose(jnp.exp(short.log_probs).sum(-1), 1.0, atol=1e-5)
  assert not WhisperCtcTeacher(tiny_model(), tiny_params(tiny_model()), vocab).padding_invariant
  with pytest.raises(ValueError, match="layer 3 does not exist"):
    teacher.forward(params, *audio_batch([9600], 9600), layers=(3,))
  with pytest.raises(ValueError, match="12 outputs but its vocabulary lists 11"):
    WhisperCtcTeacher(model, params, {f"c{i}": i for i in range(VOCAB - 1)})
