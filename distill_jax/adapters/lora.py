"""LoRA and QLoRA for any Flax param tree, selected by regexes over param paths.

Nothing here changes model code. Kernels are chosen by regular expressions matched in full
(`re.fullmatch`) against '/'-joined param paths, e.g. `r".*attention/(q|k|v|out)_proj/kernel"` or
`r".*feed_forward/.*/kernel"`; a pattern that matches no kernel is an error naming the pattern.

LoRA (Hu et al. 2021, as in PEFT): for a kernel W viewed as a matrix [fan_in, fan_out] the
adapter holds A [fan_in, r] (Kaiming-uniform, PEFT's `kaiming_uniform_(a=sqrt(5))`, i.e.
U(-1/sqrt(fan_in), 1/sqrt(fan_in))) and B [r, fan_out] (zeros, so the adapted model starts equal
to the base model), and

    y = x W + b + (alpha / r) * dropout(x) A B.

An `nn.Dense` kernel [d_in, d_out] is that matrix. An `nn.DenseGeneral` kernel [*in_dims,
*features] (the student's attention: query/key/value [D, H, Dh], out [H, Dh, D]) is reshaped
row-major to [prod(in_dims), prod(features)]; which dims are inputs comes from the layer's
`axis`, recorded by `dense_layouts(model, *inputs)` (see `tree.py`) and passed as
`init_lora(..., layouts=...)`. 2-D kernels need no layouts.

QLoRA (Dettmers et al. 2023): W is stored as an `NF4Tensor` (`quantize_base`) and only
dequantized inside the jitted forward pass.

Two ways to run an adapted model:

* `lora_apply(model, variables, adapters, x)` (the main path) runs `model.apply` under a Flax
  method interceptor (`nn.intercept_methods`). For an adapted Dense / DenseGeneral layer it
  returns `layer(x) + s * (dropout(x) @ A) @ B`: the LoRA term costs
  O(tokens * r * (fan_in + fan_out)) and never forms a [fan_in, fan_out] matrix. A layer (any
  Flax module: Dense, Conv, a custom one) whose own params include an `NF4Tensor` is run on its
  params dequantized for that call only: a custom VJP keeps the 4-bit codes and the layer's
  inputs as residuals and dequantizes again in the backward pass, each dequantization made
  data-dependent on the layer's input (forward) or incoming cotangent (backward), so the float
  kernel exists only while that layer runs (`_quantized_call`). Dropout draws from the
  module's 'dropout' RNG stream (pass `rngs={'dropout': key}`), per element, as PEFT does. An
  adapter that no layer used is an error (e.g. a pattern that hit a conv kernel, or layers
  under `nn.scan`, whose kernels are stacked: not supported).
* `apply_lora(base, adapters)` returns effective params with W_eff = dequant(W) + s A B
  materialized for every adapted layer, for a plain `model.apply`. Simple, but every layer's
  float kernel (and, under `jax.grad`, a full-size gradient per layer) is live at once, which
  defeats the point of QLoRA on a large model; dropout can only be approximated there (one mask
  over input features shared by all tokens). `merge_lora` is its deterministic form, used to
  export full-precision weights (`export.py`).

Only the adapters are trained, so only they enter the optimizer state:

    adapters = init_lora(params, patterns, rank=8, alpha=16, rng=key, dropout=0.1)
    base = quantize_base(params, patterns)                 # frozen, 4-bit
    tx = optax.adamw(1e-4)
    opt_state = tx.init(adapters)                          # moments for A and B only

    @jax.jit
    def train_step(adapters, opt_state, base, batch, key):
      def loss_fn(adapters):
        logits = lora_apply(model, {'params': base}, adapters, batch['x'],
                            lora_deterministic=False, rngs={'dropout': key})
        return loss(logits, batch)
      loss_value, grads = jax.value_and_grad(loss_fn)(adapters)  # grads w.r.t. A, B only
      updates, opt_state = tx.update(grads, opt_state, adapters)
      return optax.apply_updates(adapters, updates), opt_state, loss_value

`checkpoint.save_adapters` / `load_adapters` store the adapters alone with Orbax, tied to a
fingerprint of their base; `count_lora_params` reports the trainable fraction.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Mapping, NamedTuple

from flax import struct
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from distill_jax.adapters.nf4 import NF4Tensor, dequantize_nf4, is_nf4, quantize_nf4
from distill_jax.adapters.tree import (DenseLayout, ParamPath, Patterns, PyTree,
                                       contracting_axes, dense_layouts, flatten_params,
                                       kernel_layout, key_name, nest, path_str, select_kernels)

__all__ = [
    "LoRAWeights", "LoRAParamCount", "DenseLayout", "dense_layouts", "flatten_params",
    "flatten_adapters", "check_adapters_fit", "select_kernels", "init_lora", "quantize_base",
    "dequantize_params", "lora_interceptor", "lora_apply", "apply_lora", "merge_lora",
    "count_lora_params",
]


@struct.dataclass
class LoRAWeights:
  """The adapter of one kernel W viewed as [fan_in, fan_out] (a pytree: `a`, `b` are leaves).

  Attributes:
    a: [fan_in, r] down-projection.
    b: [r, fan_out] up-projection (zeros at initialization).
    alpha: LoRA alpha; the update is scaled by alpha / r (static).
    dropout: dropout rate on the adapter input (static).
    in_ndim: how many leading kernel dims make fan_in (1 for nn.Dense; static).
  """

  a: jax.Array
  b: jax.Array
  alpha: float = struct.field(pytree_node=False, default=16.0)
  dropout: float = struct.field(pytree_node=False, default=0.0)
  in_ndim: int = struct.field(pytree_node=False, default=1)

  @property
  def rank(self) -> int:
    return int(self.a.shape[-1])

  @property
  def scaling(self) -> float:
    return self.alpha / self.rank


def is_lora(x: Any) -> bool:
  return isinstance(x, LoRAWeights)


def flatten_adapters(adapters: PyTree) -> dict[ParamPath, LoRAWeights]:
  """{kernel path: LoRAWeights}; any other leaf is an error naming it."""
  if not adapters:
    return {}
  leaves, _ = jax.tree_util.tree_flatten_with_path(adapters, is_leaf=is_lora)
  out = {}
  for path, leaf in leaves:
    path = tuple(key_name(k) for k in path)
    if not isinstance(leaf, LoRAWeights):
      raise TypeError(f"adapters: leaf at {path_str(path)!r} is {type(leaf).__name__}, not "
                      "LoRAWeights; build adapters with init_lora or load_adapters")
    out[path] = leaf
  return out


def init_lora(params: PyTree, patterns: Patterns, rank: int, alpha: float, rng: jax.Array, *,
              dropout: float = 0.0, dtype: Any = jnp.float32,
              layouts: Mapping[ParamPath, DenseLayout] | None = None) -> dict:
  """Creates adapters for the Dense / DenseGeneral kernels matched by `patterns`.

  Args:
    params: the base param tree (float or already quantized).
    patterns: regex(es) over '/'-joined param paths, matched in full.
    rank: r.
    alpha: the update is scaled by alpha / r.
    rng: PRNG key for the A matrices.
    dropout: dropout rate on the adapter input (0 disables).
    dtype: dtype of A and B.
    layouts: `dense_layouts(model, *inputs)`; required when a matched kernel is not 2-D, and
      when given every matched kernel must belong to a Dense / DenseGeneral layer.

  Returns:
    A nested dict mirroring the param tree down to each adapted kernel, whose value is a
    `LoRAWeights` with a [fan_in, r] ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) and b [r, fan_out] = 0.
  """
  if not isinstance(rank, int) or rank < 1:
    raise ValueError(f"rank must be a positive integer, got {rank!r}")
  if not 0.0 <= dropout < 1.0:
    raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
  paths = select_kernels(params, patterns, "LoRA target pattern")
  flat = flatten_params(params)
  keys = jax.random.split(rng, len(paths))
  out = {}
  for key, path in zip(keys, paths):
    layout = kernel_layout(path, flat[path].shape, layouts)
    # PEFT: nn.init.kaiming_uniform_(lora_A.weight [r, fan_in], a=sqrt(5)): gain sqrt(2 / 6),
    # bound = gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in).
    bound = 1.0 / math.sqrt(layout.fan_in)
    a = jax.random.uniform(key, (layout.fan_in, rank), dtype, -bound, bound)
    out[path] = LoRAWeights(a=a, b=jnp.zeros((rank, layout.fan_out), dtype), alpha=float(alpha),
                            dropout=float(dropout), in_ndim=layout.in_ndim)
  return nest(out)


def quantize_base(params: PyTree, patterns: Patterns, *, block_size: int = 64,
                  double_quant: bool = True, dq_block_size: int = 256) -> PyTree:
  """Replaces the kernels matched by `patterns` with `NF4Tensor`s (others are untouched).

  Any >= 2-D param may be quantized (Dense, DenseGeneral and Conv kernels, ...): `lora_apply`
  dequantizes it for the one layer that owns it. A plain `model.apply` cannot read an
  `NF4Tensor`; use `lora_apply` or `dequantize_params`.
  """
  chosen = set(select_kernels(params, patterns, "quantize_base pattern"))

  def quantize(path, leaf):
    if tuple(key_name(k) for k in path) in chosen and not is_nf4(leaf):
      return quantize_nf4(leaf, block_size=block_size, double_quant=double_quant,
                          dq_block_size=dq_block_size)
    return leaf

  return jax.tree_util.tree_map_with_path(quantize, params, is_leaf=is_nf4)


def dequantize_params(params: PyTree) -> PyTree:
  """Every `NF4Tensor` in the tree back to a float array of its original dtype."""
  return jax.tree.map(lambda x: dequantize_nf4(x) if is_nf4(x) else x, params, is_leaf=is_nf4)


# ----------------------------------------------------------------------------------------------
# Interceptor path: y = layer(x) + s * dropout(x) A B, quantized params dequantized per layer.


def _lora_delta(module: nn.Module, x: jax.Array, lora: LoRAWeights, kernel_shape: tuple,
                path: ParamPath, deterministic: bool) -> jax.Array:
  """s * dropout(x) @ A @ B: x [..., *in_dims] (in_dims at the layer's axes) -> [..., *features]."""
  name = path_str(path)
  axes = contracting_axes(module, x.ndim, name)
  if len(axes) != lora.in_ndim:
    raise ValueError(f"LoRA on {name}: the layer contracts {len(axes)} input axes but the "
                     f"adapter was built for {lora.in_ndim} (wrong layouts?)")
  fan_in = math.prod(x.shape[a] for a in axes)
  if fan_in != lora.a.shape[0]:
    raise ValueError(f"LoRA on {name}: input feature size {fan_in} != adapter fan_in "
                     f"{lora.a.shape[0]}")
  dtype = module.dtype if module.dtype is not None else jnp.result_type(x.dtype, lora.a.dtype)
  h = x
  if lora.dropout > 0.0 and not deterministic:
    keep = jax.random.bernoulli(module.make_rng("dropout"), 1.0 - lora.dropout, x.shape)
    h = jnp.where(keep, x / (1.0 - lora.dropout), jnp.zeros_like(x))
  n = len(axes)
  h = jnp.moveaxis(h, axes, tuple(range(x.ndim - n, x.ndim)))  # DenseGeneral's output order
  lead = h.shape[:x.ndim - n]
  h = h.reshape(lead + (fan_in,))
  h = jnp.matmul(h.astype(dtype), lora.a.astype(dtype), precision=module.precision)
  h = jnp.matmul(h, lora.b.astype(dtype), precision=module.precision)
  h = h * jnp.asarray(lora.scaling, dtype)
  return h.reshape(lead + tuple(kernel_shape[lora.in_ndim:]))


def _own_params(module: nn.Module) -> dict:
  """The params of the module's scope (a child module's params appear as a nested dict)."""
  return dict(module.variables.get("params", {}))


def _opaque_zero(tree: Any) -> jax.Array:
  """A float32 scalar that is exactly 0.0 but depends on the first float element of `tree`:
  where(isfinite(v), 0 * v, 0) (0 * v alone is NaN for an infinite v). XLA does not fold it."""
  floats = [x for x in jax.tree.leaves(tree)
            if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact) and x.size]
  if not floats:
    return jnp.zeros((), jnp.float32)
  v = jnp.ravel(floats[0])[0].astype(jnp.float32)
  return jnp.where(jnp.isfinite(v), 0.0 * v, 0.0)


def _quantized_call(module: nn.Module, method: str, args: tuple, kwargs: dict, params: dict,
                    bypass: list) -> Any:
  """`module.<method>(*args, **kwargs)` on its params dequantized, one layer at a time.

  A custom VJP keeps only the 4-bit params and the layer's inputs as residuals and dequantizes
  again in the backward pass, and each dequantization is made data-dependent on what the layer
  waits for (its inputs forward, the incoming cotangent backward) by adding an exact zero that
  XLA cannot prove constant (`_opaque_zero`). Without that XLA:CPU hoists every dequantization
  to the start of the program (it depends on params alone), merges the forward and backward
  copies and holds every layer's float kernel at once; `optimization_barrier`s do not prevent
  it (XLA:CPU removes them before scheduling). `NF4Tensor` leaves are constants: their
  cotangent is zero (the quantized base is frozen); float params of the layer (e.g. a bias) and
  array inputs get exact gradients.
  """
  detached = module.clone(parent=None)
  leaves, treedef = jax.tree.flatten((args, kwargs))
  is_array = [isinstance(leaf, (jax.Array, np.ndarray)) for leaf in leaves]
  arrays = [leaf for leaf, a in zip(leaves, is_array) if a]
  quantized = {k: v for k, v in params.items() if is_nf4(v)}
  floats = {k: v for k, v in params.items() if not is_nf4(v)}

  def run(quantized, floats, arrays, zero):
    it = iter(arrays)
    call_args, call_kwargs = jax.tree.unflatten(
        treedef, [next(it) if a else leaf for leaf, a in zip(leaves, is_array)])
    # The zero enters the 4-bit codes, so that no step of the dequantization (the code-table
    # lookup is a kernel-sized temporary too) can be hoisted.
    kernels = dequantize_params(jax.tree.map(
        lambda q: q.replace(packed=q.packed + zero.astype(q.packed.dtype)), quantized,
        is_leaf=is_nf4))
    bypass[0] = True  # the detached layer's own calls must not be intercepted again
    try:
      return detached.apply({"params": {**floats, **kernels}}, *call_args, method=method,
                            **call_kwargs)
    finally:
      bypass[0] = False

  @jax.custom_vjp
  def call(quantized, floats, arrays):
    return run(quantized, floats, arrays, _opaque_zero(arrays))

  def call_fwd(quantized, floats, arrays):
    return call(quantized, floats, arrays), (quantized, floats, arrays)

  def call_bwd(residuals, cotangent):
    quantized, floats, arrays = residuals
    zero = _opaque_zero(cotangent)
    _, vjp = jax.vjp(lambda f, a: run(quantized, f, a, zero), floats, arrays)
    zeros = jax.tree.map(
        lambda v: (jnp.zeros_like(v) if jnp.issubdtype(v.dtype, jnp.inexact)
                   else np.zeros(v.shape, jax.dtypes.float0)), quantized)
    return (zeros, *vjp(cotangent))

  call.defvjp(call_fwd, call_bwd)
  return call(quantized, floats, arrays)


@contextlib.contextmanager
def lora_interceptor(adapters: PyTree = None, *, deterministic: bool = True) -> Iterator[None]:
  """Context in which Dense layers apply LoRA and modules read their NF4 params.

  Inside it, a Dense / DenseGeneral layer whose param path (module path + 'kernel') has an
  adapter returns `layer(x) + (alpha / r) * dropout(x) A B`, and any module whose own params
  hold an `NF4Tensor` runs on them dequantized for that call only (see the module docstring).
  Other modules are untouched. Enter it inside the function you jit / differentiate.

  Args:
    adapters: from `init_lora` / `load_adapters` (None: only NF4 reading).
    deterministic: disable adapter dropout; when False, layers draw from the 'dropout' RNG
      stream, so pass `rngs={'dropout': key}` to `apply`.

  Raises:
    ValueError (on leaving the context): adapters that no Dense layer used, named.
  """
  flat = flatten_adapters(adapters)
  used: set[ParamPath] = set()
  bypass = [False]

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if bypass[0] or module.scope is None:
      return next_fun(*args, **kwargs)
    params = _own_params(module)
    quantized = any(is_nf4(v) for v in params.values())
    path = tuple(module.path) + ("kernel",)
    lora = flat.get(path) if context.method_name == "__call__" and "kernel" in params else None
    if lora is not None and not isinstance(module, (nn.Dense, nn.DenseGeneral)):
      raise ValueError(f"LoRA adapter {path_str(path)!r} belongs to a {type(module).__name__}; "
                       "only nn.Dense / nn.DenseGeneral layers can be adapted")
    if lora is None and not quantized:
      return next_fun(*args, **kwargs)
    if quantized:
      if any(isinstance(v, Mapping) for v in params.values()):
        raise NotImplementedError(f"{path_str(module.path)}: NF4 params in a module with "
                                  "submodules are not supported; quantize leaf layers only")
      y = _quantized_call(module, context.method_name, args, kwargs, params, bypass)
    else:
      y = next_fun(*args, **kwargs)
    if lora is not None:
      x = args[0] if args else kwargs["inputs"]
      kernel = params["kernel"]
      used.add(path)
      y = y + _lora_delta(module, x, lora, tuple(kernel.shape), path,
                          deterministic).astype(y.dtype)
    return y

  with nn.intercept_methods(interceptor):
    yield
  unused = [p for p in flat if p not in used]
  if unused:
    raise ValueError(f"{len(unused)} LoRA adapter(s) were not applied by any nn.Dense / "
                     f"nn.DenseGeneral layer: {', '.join(path_str(p) for p in unused[:5])}")


def lora_apply(model: nn.Module, variables: Mapping[str, Any], adapters: PyTree, *args,
               lora_deterministic: bool = True, **apply_kwargs) -> Any:
  """`model.apply(variables, *args, **apply_kwargs)` with adapters and NF4 params applied.

  Args:
    model: any Flax linen module; adapted kernels must belong to `nn.Dense` / `nn.DenseGeneral`.
    variables: e.g. {'params': base_params} (base params may hold `NF4Tensor`s).
    adapters: from `init_lora` / `load_adapters` (None: only NF4 reading).
    *args: model inputs.
    lora_deterministic: disable adapter dropout (set False in training, with a 'dropout' RNG).
    **apply_kwargs: passed to `model.apply` (rngs, mutable, method, model kwargs).
  """
  with lora_interceptor(adapters, deterministic=lora_deterministic):
    return model.apply(variables, *args, **apply_kwargs)


# ----------------------------------------------------------------------------------------------
# Materializing path: W_eff = dequant(W) + s * A B.


def check_adapters_fit(base_params: PyTree, adapters: PyTree) -> None:
  """Every adapter has a kernel at its path whose [fan_in, fan_out] view matches A and B."""
  base = flatten_params(base_params)
  for path, lora in flatten_adapters(adapters).items():
    name = path_str(path)
    if path not in base:
      raise ValueError(f"adapter {name!r} has no kernel at that path in the base params")
    shape = tuple(base[path].shape)
    view = (math.prod(shape[:lora.in_ndim]), math.prod(shape[lora.in_ndim:]))
    if view != (lora.a.shape[0], lora.b.shape[1]):
      raise ValueError(f"adapter {name!r} is for a {(lora.a.shape[0], lora.b.shape[1])} kernel "
                       f"but the base kernel {shape} is {view} with in_ndim={lora.in_ndim}")


def apply_lora(base_params: PyTree, adapters: PyTree, rng: jax.Array | None = None,
               deterministic: bool = True) -> PyTree:
  """Effective float params: W_eff = dequant(W) + (alpha / r) A B for every adapted kernel.

  Every `NF4Tensor` is dequantized, adapted or not, so `model.apply({'params': out}, x)` works
  without an interceptor. Call it inside the jitted step; see the module docstring for the
  memory cost compared with `lora_apply`.

  Args:
    base_params: base param tree (float or with `NF4Tensor` kernels).
    adapters: from `init_lora` / `load_adapters`.
    rng: PRNG key, needed when `deterministic` is False and an adapter has dropout.
    deterministic: when False, adapter dropout is approximated by one keep-mask over each
      kernel's input features (rows of A), shared by all tokens of the call.

  Returns:
    A param tree of the base's structure with float kernels of their original dtype.
  """
  flat = flatten_adapters(adapters)
  check_adapters_fit(base_params, adapters)
  use_dropout = not deterministic and any(l.dropout > 0.0 for l in flat.values())
  if use_dropout and rng is None:
    raise ValueError("apply_lora(deterministic=False) with adapter dropout needs an rng")
  index = {path: i for i, path in enumerate(sorted(flat))}

  def effective(path, leaf):
    path = tuple(key_name(k) for k in path)
    w = dequantize_nf4(leaf) if is_nf4(leaf) else leaf
    lora = flat.get(path)
    if lora is None:
      return w
    a = lora.a.astype(jnp.float32)
    if use_dropout and lora.dropout > 0.0:
      keep = jax.random.bernoulli(jax.random.fold_in(rng, index[path]), 1.0 - lora.dropout,
                                  (a.shape[0],))
      a = a * (keep.astype(jnp.float32) / (1.0 - lora.dropout))[:, None]
    delta = (lora.scaling * (a @ lora.b.astype(jnp.float32))).reshape(w.shape)
    return (w.astype(jnp.float32) + delta).astype(w.dtype)

  return jax.tree_util.tree_map_with_path(effective, base_params, is_leaf=is_nf4)


def merge_lora(base_params: PyTree, adapters: PyTree) -> PyTree:
  """Full-precision params with the adapters merged in (for export): dequant(W) + s A B."""
  return apply_lora(base_params, adapters, deterministic=True)


# ----------------------------------------------------------------------------------------------
# Bookkeeping.


class LoRAParamCount(NamedTuple):
  trainable: int  # adapter parameters (A and B)
  base: int  # logical base parameters (an NF4 kernel counts its original shape)
  fraction: float  # trainable / base


def count_lora_params(adapters: PyTree, base_params: PyTree) -> LoRAParamCount:
  """Trainable adapter parameters and their fraction of the base model's parameters."""
  trainable = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(adapters))
  base = sum(int(np.prod(leaf.shape)) for leaf in flatten_params(base_params).values())
  return LoRAParamCount(trainable, base, trainable / base if base else float("nan"))
