"""Adapter checkpoints: Orbax round trip, patterns, and the base fingerprint check."""

import jax
import numpy as np
import pytest

from distill_jax.adapters import checkpoint, lora
from distill_jax.models import wav2vec2 as w2v


@pytest.fixture(name="setup")
def _setup(tiny_teacher, perturb):
  t = tiny_teacher
  adapters = perturb(lora.init_lora(t.params, t.patterns, rank=4, alpha=8.0,
                                    rng=jax.random.key(0), dropout=0.1), 1)
  return t, adapters


def test_round_trip(setup, tmp_path):
  t, adapters = setup
  path = str(tmp_path / "adapters")
  info = checkpoint.save_adapters(path, adapters, t.params, patterns=t.patterns,
                                  metadata={"step": 7})
  assert len(info["base_fingerprint"]["leaves"]) == len(jax.tree.leaves(t.params))
  restored = checkpoint.load_adapters(path, t.params)
  assert restored.patterns == t.patterns and restored.metadata == {"step": 7}
  assert restored.base_sha256 == checkpoint.base_fingerprint(t.params)["sha256"]
  assert jax.tree.structure(restored.adapters) == jax.tree.structure(adapters)
  for a, b in zip(jax.tree.leaves(adapters), jax.tree.leaves(restored.adapters)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(t.run(t.params, restored.adapters), t.run(t.params, adapters))
  with pytest.raises(FileExistsError):
    checkpoint.save_adapters(path, adapters, t.params, patterns=t.patterns)
  checkpoint.save_adapters(path, adapters, t.params, patterns=t.patterns, metadata={"step": 8},
                           overwrite=True)
  assert checkpoint.load_adapters(path, t.params).metadata == {"step": 8}


def test_nd_adapters_round_trip(tiny_student, perturb, tmp_path):
  s = tiny_student
  adapters = perturb(lora.init_lora(s.params, s.patterns, 2, 4.0, jax.random.key(3),
                                    layouts=s.layouts), 4)
  path = str(tmp_path / "student_adapters")
  checkpoint.save_adapters(path, adapters, s.params, patterns=s.patterns)
  restored = checkpoint.load_adapters(path, s.params).adapters
  out = lora.flatten_adapters(restored)[("encoder", "block0", "attention", "out", "kernel")]
  assert out.in_ndim == 2
  np.testing.assert_array_equal(s.run(s.params, restored), s.run(s.params, adapters))


def test_different_base_is_an_error(setup, tmp_path):
  t, adapters = setup
  path = str(tmp_path / "adapters")
  checkpoint.save_adapters(path, adapters, t.params, patterns=t.patterns)
  other = jax.device_put(w2v.init_params(t.config, seed=1))  # same architecture, other weights
  with pytest.raises(checkpoint.BaseMismatchError,
                     match=r"different base(.|\n)*params whose values differ: "):
    checkpoint.load_adapters(path, other)
  edited = jax.tree.map(lambda x: x, t.params)
  edited["lm_head"]["bias"] = edited["lm_head"]["bias"] + 1e-6  # one value of one tensor
  with pytest.raises(checkpoint.BaseMismatchError, match=r"1 params whose values differ: "
                     r"lm_head/bias"):
    checkpoint.load_adapters(path, edited)
  del edited["lm_head"]
  with pytest.raises(checkpoint.BaseMismatchError, match=r"missing from this base: lm_head/bias"):
    checkpoint.load_adapters(path, edited)
  # No check when asked for explicitly (inspection).
  assert checkpoint.load_adapters(path, None).patterns == t.patterns


def test_qlora_adapters_check_against_float_and_quantized_base(setup, tmp_path):
  t, adapters = setup
  quantized = lora.quantize_base(t.params, t.patterns)
  path = str(tmp_path / "qlora")
  checkpoint.save_adapters(path, adapters, quantized, patterns=t.patterns)
  checkpoint.load_adapters(path, quantized)
  checkpoint.load_adapters(path, t.params)  # re-quantizing the float base reproduces the codes
  with pytest.raises(checkpoint.BaseMismatchError, match="values differ"):
    checkpoint.load_adapters(path, lora.quantize_base(t.params, t.patterns, block_size=32))
  # LoRA adapters trained on the float base cannot be checked against a quantized one.
  float_path = str(tmp_path / "lora")
  checkpoint.save_adapters(float_path, adapters, t.params, patterns=t.patterns)
  with pytest.raises(checkpoint.BaseMismatchError, match="NF4-quantized here but float"):
    checkpoint.load_adapters(float_path, quantized)


def test_bad_checkpoints(setup, tmp_path):
  t, adapters = setup
  with pytest.raises(FileNotFoundError, match="no adapter checkpoint"):
    checkpoint.load_adapters(str(tmp_path / "nothing"), t.params)
  with pytest.raises(ValueError, match="no kernel at that path"):
    checkpoint.save_adapters(str(tmp_path / "a"), adapters, {"lm_head": t.params["lm_head"]},
                             patterns=t.patterns)
  with pytest.raises(ValueError, match="no adapters"):
    checkpoint.save_adapters(str(tmp_path / "b"), {}, t.params, patterns=t.patterns)
