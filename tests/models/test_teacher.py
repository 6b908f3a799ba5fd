"""models/teacher.py and its wav2vec2 implementation: the one teacher interface."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import text
from distill_jax.models import teacher
from distill_jax.models import wav2vec2 as w2v
from distill_jax.models.wav2vec2_teacher import Wav2Vec2Teacher

CFG = w2v.Wav2Vec2Config(vocab_size=32, hidden_size=24, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=32, conv_dim=(8,) * 7,
                         num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)


def test_wav2vec2_teacher_forward_is_the_model_with_log_softmax_and_chosen_layers():
  params = w2v.init_params(CFG, seed=3)
  t = Wav2Vec2Teacher(CFG, params, text.CharTokenizer().vocab)
  rng = np.random.default_rng(0)
  x = (0.3 * rng.normal(size=(2, 4000))).astype(np.float32)
  pad = np.zeros_like(x)
  pad[1, 3000:] = 1.0
  out = jax.jit(lambda p, w, m: t.forward(p, w, m, (2, 0)))(params, x, pad)
  ref = w2v.Wav2Vec2ForCTC(CFG).apply({"params": params}, w2v.normalize_waveform(x, pad), pad)
  np.testing.assert_allclose(out.log_probs, jax.nn.log_softmax(ref["logits"]), atol=1e-5)
  np.testing.assert_allclose(out.hidden[0], ref["hidden_states"][2], atol=1e-5)
  np.testing.assert_allclose(out.hidden[1], ref["hidden_states"][0], atol=1e-5)
  np.testing.assert_array_equal(out.frame_paddings, ref["frame_paddings"])
  assert out.log_probs.shape[1] == t.num_frames(4000) and t.frame_samples == 320
  assert t.num_hidden_states == 3 and t.vocab_size == 32
  assert t.padding_invariant == (CFG.feat_extract_norm == "layer" and CFG.attention_mask)
  assert t.describe()["config"]["num_hidden_layers"] == 2


def test_layers_that_do_not_exist_or_repeat_are_named():
  t = Wav2Vec2Teacher(CFG, None, {})
  with pytest.raises(ValueError, match="layer 3 does not exist; the wav2vec2 teacher's hidden "
                                       r"states have indices 0\.\.2"):
    t.check_layers((3,))
  with pytest.raises(ValueError, match="layer 1 appears more than once"):
    t.check_layers((1, 1))
  with pytest.raises(ValueError, match="is not an integer"):
    t.check_layers((1.5,))


def test_params_fingerprint_depends_on_values_only():
  params = {"a": np.ones((2, 3), np.float32), "b": {"c": np.zeros(4, np.float32)}}
  fp = teacher.params_fingerprint(params)
  assert teacher.params_fingerprint(jax.tree.map(jnp.asarray, params)) == fp
  other = {"a": params["a"].copy(), "b": {"c": np.full(4, 1e-7, np.float32)}}
  assert teacher.params_fingerprint(other) != fp


def test_check_vocab_match():
  vocab = {"<pad>": 0, "|": 1, "a": 2, "b": 3}
  teacher.check_vocab_match(vocab, dict(vocab))
  other = {"<pad>": 0, "|": 1, "b": 2, "a": 3, "'": 4}
  with pytest.raises(ValueError) as err:
    teacher.check_vocab_match({**vocab, "c": 4}, other)
  msg = str(err.value)
  assert "identical id spaces" in msg and "sizes 5 (student) vs 5 (teacher)" in msg
  assert "only in the student: ['c' (id 4)]" in msg
  assert "only in the teacher: [\"'\" (id 4)]" in msg
  assert "different ids: ['a' (student 2, teacher 3), 'b' (student 3, teacher 2)]" in msg

