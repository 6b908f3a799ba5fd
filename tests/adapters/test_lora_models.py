"""LoRA / QLoRA on the real student (Conformer: 3-D DenseGeneral attention kernels) and teacher.

Tolerances: merged vs unmerged and QLoRA vs its dequantized base within 1e-5 (float32 logits).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from distill_jax.adapters import lora
from distill_jax.adapters.nf4 import NF4Tensor

ATOL = 1e-5


def _max_diff(a, b):
  return float(jnp.max(jnp.abs(a - b)))


def test_student_layouts_and_shapes(tiny_student):
  s = tiny_student
  adapters = lora.init_lora(s.params, s.patterns, rank=4, alpha=8.0, rng=jax.random.key(1),
                            layouts=s.layouts)
  flat = lora.flatten_adapters(adapters)
  assert len(flat) == 4 + 4  # q, k, v, out + ff1/ff2 in/out
  query = flat[("encoder", "block0", "attention", "query", "kernel")]
  out = flat[("encoder", "block0", "attention", "out", "kernel")]
  assert (query.a.shape, query.b.shape, query.in_ndim) == ((16, 4), (4, 16), 1)  # [16, 2, 8]
  assert (out.a.shape, out.b.shape, out.in_ndim) == ((16, 4), (4, 16), 2)  # [2, 8, 16]
  assert np.max(np.abs(np.asarray(out.a))) <= 1 / np.sqrt(16)  # fan_in = H * Dh


def test_nd_kernel_needs_layouts_and_a_dense_layer(tiny_student):
  s = tiny_student
  with pytest.raises(ValueError, match=r"block0/attention/key/kernel is a 3-D kernel .*layouts="):
    lora.init_lora(s.params, s.patterns, 4, 8.0, jax.random.key(1))
  with pytest.raises(ValueError, match="conv/depthwise/kernel .* is not the kernel of an nn.Dense"):
    lora.init_lora(s.params, r".*block0/conv/depthwise/kernel", 4, 8.0, jax.random.key(1),
                   layouts=s.layouts)
  # Without layouts a 2-D conv kernel looks like a Dense one; no Dense layer uses the adapter,
  # which is an error rather than a silently ignored adapter.
  bad = lora.init_lora(s.params, r".*block0/conv/depthwise/kernel", 4, 8.0, jax.random.key(1))
  with pytest.raises(ValueError, match="belongs to a DepthwiseConv1D; only nn.Dense"):
    s.run(s.params, bad)
  # An adapter that no layer picks up (here: at a path the model does not have) is an error.
  good = lora.init_lora(s.params, s.patterns, 2, 4.0, jax.random.key(1), layouts=s.layouts)
  stray = {**good, "nowhere": good["encoder"]["block0"]["ff1"]["in"]}  # {'kernel': LoRAWeights}
  with pytest.raises(ValueError, match="1 LoRA adapter.* not applied .*: nowhere/kernel"):
    s.run(s.params, stray)


@pytest.mark.parametrize("which", ["student", "teacher"])
def test_identity_at_init_and_merged_equals_unmerged(which, tiny_student, tiny_teacher,
                                                     perturb):
  m = tiny_student if which == "student" else tiny_teacher
  layouts = getattr(m, "layouts", None)
  fresh = lora.init_lora(m.params, m.patterns, rank=4, alpha=8.0, rng=jax.random.key(2),
                         dropout=0.1, layouts=layouts)
  base_out = m.run_base(m.params)
  # B = 0: equal up to XLA compiling the two programs differently (float32 reassociation).
  np.testing.assert_allclose(m.run(m.params, fresh), base_out, rtol=0, atol=1e-6)
  adapters = perturb(fresh, 3)
  unmerged = m.run(m.params, adapters)
  assert _max_diff(unmerged, base_out) > 1e-3  # every path matters
  merged = m.run_base(jax.jit(lora.merge_lora)(m.params, adapters))
  np.testing.assert_allclose(unmerged, merged, rtol=0, atol=ATOL)


@pytest.mark.parametrize("which", ["student", "teacher"])
def test_qlora_matches_dequantized_base(which, tiny_student, tiny_teacher, perturb):
  m = tiny_student if which == "student" else tiny_teacher
  layouts = getattr(m, "layouts", None)
  adapters = perturb(lora.init_lora(m.params, m.patterns, rank=4, alpha=8.0,
                                    rng=jax.random.key(4), layouts=layouts), 5)
  # Quantize every kernel, conv ones too: those are read through their own module, dequantized.
  base = lora.quantize_base(m.params, r".*kernel|.*weight_v")
  kinds = {type(x) for x in jax.tree.leaves(base, is_leaf=lambda x: isinstance(x, NF4Tensor))}
  assert NF4Tensor in kinds
  y = m.run(base, adapters)
  np.testing.assert_allclose(y, m.run_base(lora.merge_lora(base, adapters)), rtol=0, atol=ATOL)
  np.testing.assert_allclose(y, m.run(lora.dequantize_params(base), adapters), rtol=0, atol=ATOL)
  assert _max_diff(y, m.run(m.params, adapters)) > 1e-4  # it is quantized


def test_student_qlora_training_step_updates_adapters_only(tiny_student):
  s = tiny_student
  adapters = lora.init_lora(s.params, s.patterns, rank=2, alpha=4.0, rng=jax.random.key(6),
                            dropout=0.1, layouts=s.layouts)
  base = lora.quantize_base(s.params, s.patterns)
  tx = optax.adam(1e-2)
  opt_state = tx.init(adapters)
  target = jax.random.normal(jax.random.key(7), s.run_base(s.params).shape)

  @jax.jit
  def step(adapters, opt_state, key):
    def loss_fn(adapters):
      logits = lora.lora_apply(s.model, {"params": base}, adapters, s.wave, s.pad, train=True,
                               lora_deterministic=False, rngs={"dropout": key})["logits"]
      return jnp.mean((logits - target) ** 2)
    loss, grads = jax.value_and_grad(loss_fn)(adapters)
    updates, opt_state = tx.update(grads, opt_state, adapters)
    return optax.apply_updates(adapters, updates), opt_state, loss, grads

  new, _, loss0, grads = step(adapters, opt_state, jax.random.key(8))
  out_grad = lora.flatten_adapters(grads)[("encoder", "block0", "attention", "out", "kernel")]
  assert float(jnp.abs(out_grad.b).max()) > 0  # B of the 3-D out kernel gets a gradient
  assert jax.tree.structure(new) == jax.tree.structure(adapters)
  _, _, loss1, _ = step(new, tx.init(new), jax.random.key(8))
  assert np.isfinite(float(loss0)) and float(loss1) < float(loss0)
