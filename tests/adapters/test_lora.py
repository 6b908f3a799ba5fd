"""Tests for distill_jax.adapters.lora on a small Flax attention + feed-forward model."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from distill_jax.adapters import lora
from distill_jax.adapters.nf4 import NF4Tensor

D, HEADS, FF = 32, 4, 64
PATTERNS = [r".*attention/(q|k|v|out)_proj/kernel", r".*feed_forward/.*/kernel"]


class Attention(nn.Module):
  """Multi-head self-attention from plain Dense projections. x [B, T, D] -> [B, T, D]."""

  @nn.compact
  def __call__(self, x):
    b, t, _ = x.shape
    split = lambda y: y.reshape(b, t, HEADS, D // HEADS)
    q = split(nn.Dense(D, name="q_proj")(x))
    k = split(nn.Dense(D, name="k_proj")(x))
    v = split(nn.Dense(D, name="v_proj")(x))
    w = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(D // HEADS), axis=-1)
    return nn.Dense(D, name="out_proj")(jnp.einsum("bhqk,bkhd->bqhd", w, v).reshape(b, t, D))


class FeedForward(nn.Module):

  @nn.compact
  def __call__(self, x):
    return nn.Dense(D, name="fc2")(nn.gelu(nn.Dense(FF, name="fc1")(x)))


class Layer(nn.Module):

  @nn.compact
  def __call__(self, x):
    x = x + Attention(name="attention")(nn.LayerNorm(name="norm1")(x))
    return x + FeedForward(name="feed_forward")(nn.LayerNorm(name="norm2")(x))


class TinyEncoder(nn.Module):
  """[B, T, 20] features -> [B, T, 7] logits."""

  @nn.compact
  def __call__(self, x):
    x = nn.Dense(D, name="in_proj")(x)
    for i in range(2):
      x = Layer(name=f"layers_{i}")(x)
    return nn.DenseGeneral(7, name="head")(x)


MODEL = TinyEncoder()
X = jax.random.normal(jax.random.key(0), (2, 9, 20))


@pytest.fixture(scope="module")
def params():
  return jax.jit(MODEL.init)(jax.random.key(1), X)["params"]


@pytest.fixture(scope="module")
def fresh(params):
  """Adapters as initialized (B = 0), with dropout 0.1."""
  return lora.init_lora(params, PATTERNS, rank=4, alpha=8.0, rng=jax.random.key(2), dropout=0.1)


@pytest.fixture(scope="module")
def adapters(fresh):
  """The same adapters with non-zero B, so they change the output."""
  rng = np.random.default_rng(3)
  return jax.tree.map(lambda x: x + 0.05 * rng.standard_normal(x.shape, np.float32), fresh)


@pytest.fixture(scope="module")
def base(params):
  return lora.quantize_base(params, PATTERNS)


@jax.jit
def run_base(params, x):
  return MODEL.apply({"params": params}, x)


@jax.jit
def run_lora(params, adapters, x):
  return lora.lora_apply(MODEL, {"params": params}, adapters, x)


@jax.jit
def run_lora_train(params, adapters, x, key):
  return lora.lora_apply(MODEL, {"params": params}, adapters, x, lora_deterministic=False,
                         rngs={"dropout": key})


merge = jax.jit(lora.merge_lora)


def test_init_only_matched_kernels(params, fresh):
  flat = lora.flatten_adapters(fresh)
  names = sorted("/".join(p) for p in flat)
  assert len(names) == 12
  assert "layers_0/attention/q_proj/kernel" in names
  assert "layers_1/feed_forward/fc2/kernel" in names
  assert not any("in_proj" in n or "head" in n or "norm" in n for n in names)
  kernels = lora.flatten_params(params)
  for path, w in flat.items():
    d_in, d_out = kernels[path].shape
    assert w.a.shape == (d_in, 4) and w.b.shape == (4, d_out)
    assert np.all(np.asarray(w.b) == 0)
    assert np.max(np.abs(np.asarray(w.a))) <= 1 / np.sqrt(d_in)  # Kaiming-uniform, a=sqrt(5)
    assert np.std(np.asarray(w.a)) > 0.3 / np.sqrt(d_in)
    assert (w.scaling, w.rank, w.dropout) == (2.0, 4, 0.1)
  counts = lora.count_lora_params(fresh, params)
  assert counts.trainable == sum(4 * (w.a.shape[0] + w.b.shape[1]) for w in flat.values())
  assert counts.base == sum(x.size for x in jax.tree.leaves(params))
  assert counts.fraction == pytest.approx(counts.trainable / counts.base)


def test_pattern_matching_nothing_is_an_error(params):
  with pytest.raises(ValueError, match=r"'\.\*attn/q_proj/kernel' matches no kernel"):
    lora.init_lora(params, [PATTERNS[0], r".*attn/q_proj/kernel"], 4, 8.0, jax.random.key(0))
  with pytest.raises(ValueError, match="only 1-D / scalar leaves: layers_0/attention/q_proj/bias"):
    lora.init_lora(params, r".*q_proj/bias", 4, 8.0, jax.random.key(0))
  with pytest.raises(ValueError, match="quantize_base pattern 'nothing'"):
    lora.quantize_base(params, r"nothing")


def test_identity_at_initialization(params, fresh):
  np.testing.assert_array_equal(run_lora(params, fresh, X), run_base(params, X))
  # With dropout active too: B = 0 makes the adapter term exactly zero.
  np.testing.assert_array_equal(run_lora_train(params, fresh, X, jax.random.key(9)),
                                run_base(params, X))


def test_merged_equals_unmerged(params, adapters):
  unmerged = run_lora(params, adapters, X)
  assert float(jnp.max(jnp.abs(unmerged - run_base(params, X)))) > 1e-2  # adapters matter
  merged = run_base(merge(params, adapters), X)
  np.testing.assert_allclose(unmerged, merged, rtol=0, atol=1e-5)
  effective = jax.jit(lambda p, a, x: MODEL.apply({"params": lora.apply_lora(p, a)}, x))
  np.testing.assert_allclose(effective(params, adapters, X), merged, rtol=0, atol=1e-5)


def test_qlora_forward_under_jit(params, adapters, base):
  kernel = base["layers_0"]["attention"]["q_proj"]["kernel"]
  assert isinstance(kernel, NF4Tensor) and kernel.packed.dtype == jnp.uint8
  assert isinstance(base["in_proj"]["kernel"], jax.Array)  # not matched: stays float
  leaves = jax.tree.leaves(base, is_leaf=lambda x: isinstance(x, NF4Tensor))
  assert sum(isinstance(x, NF4Tensor) for x in leaves) == 12
  y = run_lora(base, adapters, X)
  np.testing.assert_allclose(y, run_lora(lora.dequantize_params(base), adapters, X), rtol=0,
                             atol=1e-5)
  np.testing.assert_allclose(y, run_base(merge(base, adapters), X), rtol=0, atol=1e-5)
  assert float(jnp.max(jnp.abs(y - run_lora(params, adapters, X)))) > 1e-4  # it is quantized
  # The jitted program receives the 4-bit codes, never a float copy of the kernels.
  jaxpr = jax.make_jaxpr(run_lora)(base, adapters, X)
  in_dtypes = [v.aval.dtype for v in jaxpr.jaxpr.invars]
  assert sum(d == jnp.uint8 for d in in_dtypes) == 24  # packed codes + 8-bit absmax per kernel
  assert sum(d == jnp.float32 for d in in_dtypes) == len(in_dtypes) - 24


def test_only_adapters_are_trained(fresh, params, base):
  tx = optax.adam(1e-2)
  opt_state = tx.init(fresh)
  state_arrays = [x for x in jax.tree.leaves(opt_state) if x.ndim > 0]
  assert len(state_arrays) == 2 * len(jax.tree.leaves(fresh))  # Adam mu, nu of A, B; nothing else
  assert sum(x.size for x in state_arrays) == 2 * lora.count_lora_params(fresh, params).trainable
  target = jax.random.normal(jax.random.key(4), (2, 9, 7))

  @jax.jit
  def step(adapters, opt_state, key):
    def loss_fn(adapters):
      return jnp.mean((run_lora_train(base, adapters, X, key) - target) ** 2)
    loss, grads = jax.value_and_grad(loss_fn)(adapters)
    updates, opt_state = tx.update(grads, opt_state, adapters)
    return optax.apply_updates(adapters, updates), opt_state, loss

  adapters, losses = fresh, []
  for i in range(8):
    adapters, opt_state, loss = step(adapters, opt_state, jax.random.key(100 + i))
    losses.append(float(loss))
  assert losses[-1] < losses[0]
  assert jax.tree.structure(adapters) == jax.tree.structure(fresh)
  # (That the NF4 base is dequantized again, one layer at a time, in the backward pass is
  # test_qlora_grad_dequantizes_one_layer_at_a_time.)


def test_dropout_uses_the_dropout_stream(params, adapters):
  y1 = run_lora_train(params, adapters, X, jax.random.key(1))
  np.testing.assert_array_equal(y1, run_lora_train(params, adapters, X, jax.random.key(1)))
  assert float(jnp.max(jnp.abs(y1 - run_lora_train(params, adapters, X, jax.random.key(2))))) > 1e-4
  assert float(jnp.max(jnp.abs(y1 - run_lora(params, adapters, X)))) > 1e-4
  with pytest.raises(Exception, match="dropout"):
    lora.lora_apply(MODEL, {"params": params}, adapters, X, lora_deterministic=False)
  eff = jax.jit(lambda p, a, k: lora.apply_lora(p, a, rng=k, deterministic=False))(
      params, adapters, jax.random.key(0))
  assert jax.tree.structure(eff) == jax.tree.structure(params)
  with pytest.raises(ValueError, match="rng"):
    lora.apply_lora(params, adapters, deterministic=False)


def test_adapters_must_fit_the_base(params, fresh):
  other = jax.tree.map(lambda x: x, params)
  other["layers_0"]["attention"].pop("q_proj")
  with pytest.raises(ValueError, match="layers_0/attention/q_proj/kernel"):
    lora.merge_lora(other, fresh)


def test_root_dense_general_layer():
  model = nn.DenseGeneral(6)  # the root module: its kernel path is just 'kernel'
  x = jax.random.normal(jax.random.key(5), (3, 64))
  p = model.init(jax.random.key(6), x)["params"]
  adapters = lora.init_lora(p, "kernel", rank=2, alpha=4.0, rng=jax.random.key(7))
  adapters = jax.tree.map(lambda v: v + 0.1, adapters)
  q = lora.quantize_base(p, "kernel", double_quant=False)
  y = lora.lora_apply(model, {"params": q}, adapters, x)
  np.testing.assert_allclose(y, model.apply({"params": lora.merge_lora(q, adapters)}, x),
                             rtol=0, atol=1e-5)
  deq = lora.dequantize_params(q)["kernel"]
  w = lora.flatten_adapters(adapters)[("kernel",)]
  expected = x @ deq + p["bias"] + 2.0 * (x @ w.a) @ w.b  # the adapter is added exactly once
  np.testing.assert_allclose(y, expected, rtol=0, atol=1e-5)


class DenseChain(nn.Module):
  """`layers` Dense layers with tanh in between. x [B, T, width] -> [B, T, width]."""

  layers: int
  width: int

  @nn.compact
  def __call__(self, x):
    for i in range(self.layers):
      x = jnp.tanh(nn.Dense(self.width, name=f"dense_{i}")(x))
    return x


def _dense_chain_qlora(layers=8, width=256):
  """Eight 256x256 NF4 kernels (256 KiB each as float32) with rank-2 adapters, few activations
  (16 tokens). Returns (jitted grad of the adapters' loss, adapters, NF4 base, kernel bytes)."""
  model = DenseChain(layers, width)
  x = jax.random.normal(jax.random.key(8), (1, 16, width))
  params = jax.jit(model.init)(jax.random.key(9), x)["params"]
  pattern = r"dense_\d+/kernel"
  base = lora.quantize_base(params, pattern)
  adapters = lora.init_lora(params, pattern, rank=2, alpha=4.0, rng=jax.random.key(10))
  rng = np.random.default_rng(11)
  adapters = jax.tree.map(lambda v: v + 0.05 * rng.standard_normal(v.shape, np.float32), adapters)

  def loss(adapters, base):
    return jnp.sum(lora.lora_apply(model, {"params": base}, adapters, x) ** 2)
  return jax.jit(jax.grad(loss)), adapters, base, width * width * 4


def test_qlora_grad_equals_lora_on_the_dequantized_base():
  grad, adapters, base, _ = _dense_chain_qlora()
  grads = grad(adapters, base)
  expected = grad(adapters, lora.dequantize_params(base))
  assert float(max(jnp.max(jnp.abs(g)) for g in jax.tree.leaves(grads))) > 1e-2
  for g, e in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
    np.testing.assert_allclose(g, e, rtol=0, atol=1e-6)


def test_qlora_grad_dequantizes_one_layer_at_a_time():
  """The training gradient never holds many layers' float kernels at once: if XLA dequantized
  the kernels ahead of the layers that use them (as it does with `jax.checkpoint` around each
  layer, or with optimization barriers: 8.1 kernels of temporaries for these 8 layers), the
  step's temporaries reach several kernels; one layer at a time needs about one (measured 1.8
  with `lora._quantized_call`'s custom VJP and data-dependent dequantization)."""
  grad, adapters, base, kernel_bytes = _dense_chain_qlora()
  memory = grad.lower(adapters, base).compile().memory_analysis()
  assert memory.temp_size_in_bytes < 3 * kernel_bytes, (memory.temp_size_in_bytes, kernel_bytes)
