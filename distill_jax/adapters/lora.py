"""LoRA and QLoRA for any Flax param tree, selected by regexes over param paths.

Nothing here changes model code. Kernels are chosen by regular expressions matched in full
(`re.fullmatch`) against '/'-joined param paths, e.g. `r".*attention/(q|k|v|out)_proj/kernel"` or
`r".*feed_forward/.*/kernel"`; only 2-D kernels ([d_in, d_out], the Dense layout) are adapted or
quantized, and a pattern that matches no 2-D kernel is an error naming the pattern.

LoRA (Hu et al. 2021, as in PEFT): for a kernel W [d_in, d_out] the adapter holds
A [d_in, r] (Kaiming-uniform, PEFT's `kaiming_uniform_(a=sqrt(5))`, i.e. U(-1/sqrt(d_in),
1/sqrt(d_in))) and B [r, d_out] (zeros, so the adapted model starts equal to the base model), and

    y = x W + b + (alpha / r) * dropout(x) A B.

QLoRA (Dettmers et al. 2023): W is stored as an `NF4Tensor` (`quantize_base`) and only
dequantized inside the jitted forward pass.

Two ways to run an adapted model:

* `lora_apply(model, variables, adapters, x)` (the main path) runs `model.apply` under a Flax
  method interceptor (`nn.intercept_methods`) on `nn.Dense` / `nn.DenseGeneral.__call__`. For an
  adapted layer it returns `layer(x) + s * (dropout(x) @ A) @ B`: the LoRA term costs
  O(tokens * r * (d_in + d_out)) and never forms a [d_in, d_out] matrix. For a layer whose kernel
  is an `NF4Tensor` it runs the layer itself on `dequantize_nf4(W)` inside `jax.checkpoint`, so
  the float kernel exists only while that layer's matmul runs and is recomputed from the 4-bit
  codes for the backward pass instead of being kept as a residual. Dropout draws from the
  module's 'dropout' RNG stream (pass `rngs={'dropout': key}`), per element, as PEFT does.
* `apply_lora(base, adapters)` returns effective params with W_eff = dequant(W) + s A B
  materialized for every adapted layer, for a plain `model.apply`. Simple, but every layer's
  float kernel (and, under `jax.grad`, a [d_in, d_out] gradient per layer) is live at once, which
  defeats the point of QLoRA on a large model; dropout can only be approximated there (one mask
  over input features shared by all tokens). `merge_lora` is its deterministic form, used to
  export full-precision weights.

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

`save_adapters` / `load_adapters` store the adapters alone with Orbax (a few MB, independent of
the base checkpoint); `count_lora_params` reports the trainable fraction.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from typing import Any, Iterator, Mapping, NamedTuple, Sequence, Union

from flax import struct
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from distill_jax.adapters.nf4 import NF4Tensor, dequantize_nf4, is_nf4, quantize_nf4

PyTree = Any
ParamPath = tuple[str, ...]
Patterns = Union[str, Sequence[str]]

_FORMAT = "distill_jax.lora/1"


@struct.dataclass
class LoRAWeights:
  """The adapter of one kernel W [d_in, d_out] (a pytree: `a` and `b` are the trainable leaves).

  Attributes:
    a: [d_in, r] down-projection.
    b: [r, d_out] up-projection (zeros at initialization).
    alpha: LoRA alpha; the update is scaled by alpha / r (static).
    dropout: dropout rate on the adapter input (static).
  """

  a: jax.Array
  b: jax.Array
  alpha: float = struct.field(pytree_node=False, default=16.0)
  dropout: float = struct.field(pytree_node=False, default=0.0)

  @property
  def rank(self) -> int:
    return int(self.a.shape[-1])

  @property
  def scaling(self) -> float:
    return self.alpha / self.rank


def _is_lora(x: Any) -> bool:
  return isinstance(x, LoRAWeights)


def _key_name(key: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def flatten_params(params: PyTree) -> dict[ParamPath, Any]:
  """{path: leaf} in tree order; `NF4Tensor`s count as leaves."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(params, is_leaf=is_nf4)
  return {tuple(_key_name(k) for k in path): leaf for path, leaf in leaves}


def _flatten_adapters(adapters: PyTree) -> dict[ParamPath, LoRAWeights]:
  if not adapters:
    return {}
  leaves, _ = jax.tree_util.tree_flatten_with_path(adapters, is_leaf=_is_lora)
  out = {}
  for path, leaf in leaves:
    name = "/".join(_key_name(k) for k in path)
    if not isinstance(leaf, LoRAWeights):
      raise TypeError(f"adapters: leaf at {name!r} is {type(leaf).__name__}, not LoRAWeights; "
                      "build adapters with init_lora or load_adapters")
    out[tuple(_key_name(k) for k in path)] = leaf
  return out


def _nest(flat: Mapping[ParamPath, Any]) -> dict:
  out: dict = {}
  for path, value in flat.items():
    node = out
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  return out


def select_kernels(params: PyTree, patterns: Patterns, what: str = "pattern") -> list[ParamPath]:
  """Paths of the 2-D leaves whose '/'-joined path fully matches one of `patterns`.

  Args:
    params: a param tree (may hold `NF4Tensor`s).
    patterns: one regex or a sequence of them.
    what: how to name the patterns in error messages.

  Returns:
    Matched paths in tree order.

  Raises:
    ValueError: naming every pattern that matches no 2-D leaf (and what it matched instead).
  """
  if isinstance(patterns, str):
    patterns = [patterns]
  if not patterns:
    raise ValueError(f"{what}: no patterns given")
  flat = flatten_params(params)
  selected: set[ParamPath] = set()
  for pattern in patterns:
    regex = re.compile(pattern)
    hits = [p for p in flat if regex.fullmatch("/".join(p))]
    kernels = [p for p in hits if len(flat[p].shape) == 2]
    if not kernels:
      if hits:
        detail = "it matches only non-2-D leaves: " + ", ".join(
            f"{'/'.join(p)} {tuple(flat[p].shape)}" for p in hits[:5])
      else:
        detail = "param paths look like: " + ", ".join("/".join(p) for p in list(flat)[:5])
      raise ValueError(f"{what} {pattern!r} matches no 2-D kernel in the param tree; {detail}")
    selected.update(kernels)
  return [p for p in flat if p in selected]


def init_lora(params: PyTree, patterns: Patterns, rank: int, alpha: float, rng: jax.Array, *,
              dropout: float = 0.0, dtype: Any = jnp.float32) -> dict:
  """Creates adapters for the 2-D kernels matched by `patterns`.

  Args:
    params: the base param tree (float or already quantized).
    patterns: regex(es) over '/'-joined param paths, matched in full.
    rank: r.
    alpha: the update is scaled by alpha / r.
    rng: PRNG key for the A matrices.
    dropout: dropout rate on the adapter input (0 disables).
    dtype: dtype of A and B.

  Returns:
    A nested dict mirroring the param tree down to each adapted kernel, whose value is a
    `LoRAWeights` with a [d_in, r] ~ U(-1/sqrt(d_in), 1/sqrt(d_in)) and b [r, d_out] = 0.
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
    d_in, d_out = flat[path].shape
    # PEFT: nn.init.kaiming_uniform_(lora_A.weight [r, d_in], a=sqrt(5)): gain sqrt(2 / 6),
    # bound = gain * sqrt(3 / fan_in) = 1 / sqrt(d_in).
    bound = 1.0 / math.sqrt(d_in)
    a = jax.random.uniform(key, (d_in, rank), dtype, -bound, bound)
    out[path] = LoRAWeights(a=a, b=jnp.zeros((rank, d_out), dtype), alpha=float(alpha),
                            dropout=float(dropout))
  return _nest(out)


def quantize_base(params: PyTree, patterns: Patterns, *, block_size: int = 64,
                  double_quant: bool = True, dq_block_size: int = 256) -> PyTree:
  """Replaces the 2-D kernels matched by `patterns` with `NF4Tensor`s (others are untouched).

  Run `lora_apply` (or `dequantize_params`) on the result: a plain `model.apply` cannot read an
  `NF4Tensor` kernel.
  """
  chosen = set(select_kernels(params, patterns, "quantize_base pattern"))

  def quantize(path, leaf):
    if tuple(_key_name(k) for k in path) in chosen and not is_nf4(leaf):
      return quantize_nf4(leaf, block_size=block_size, double_quant=double_quant,
                          dq_block_size=dq_block_size)
    return leaf

  return jax.tree_util.tree_map_with_path(quantize, params, is_leaf=is_nf4)


def dequantize_params(params: PyTree) -> PyTree:
  """Every `NF4Tensor` in the tree back to a float array of its original dtype."""
  return jax.tree.map(lambda x: dequantize_nf4(x) if is_nf4(x) else x, params, is_leaf=is_nf4)


# ----------------------------------------------------------------------------------------------
# Interceptor path: y = layer(x) + s * dropout(x) A B, quantized kernels dequantized per layer.


def _lora_delta(module: nn.Module, x: jax.Array, lora: LoRAWeights, path: ParamPath,
                deterministic: bool) -> jax.Array:
  """s * dropout(x) @ A @ B for x [..., d_in] -> [..., d_out]."""
  name = "/".join(path)
  if isinstance(module, nn.DenseGeneral):
    axis = module.axis if isinstance(module.axis, tuple) else (module.axis,)
    if module.batch_dims or len(axis) != 1 or axis[0] not in (-1, x.ndim - 1):
      raise NotImplementedError(
          f"LoRA on {name}: DenseGeneral with axis={module.axis}, batch_dims={module.batch_dims} "
          "is not supported (only a single contracting last axis)")
  if x.shape[-1] != lora.a.shape[0]:
    raise ValueError(f"LoRA on {name}: input feature size {x.shape[-1]} != adapter d_in "
                     f"{lora.a.shape[0]}")
  dtype = module.dtype if module.dtype is not None else jnp.result_type(x.dtype, lora.a.dtype)
  h = x
  if lora.dropout > 0.0 and not deterministic:
    keep = jax.random.bernoulli(module.make_rng("dropout"), 1.0 - lora.dropout, x.shape)
    h = jnp.where(keep, x / (1.0 - lora.dropout), jnp.zeros_like(x))
  h = jnp.matmul(h.astype(dtype), lora.a.astype(dtype), precision=module.precision)
  h = jnp.matmul(h, lora.b.astype(dtype), precision=module.precision)
  return h * jnp.asarray(lora.scaling, dtype)


def _quantized_call(module: nn.Module, x: jax.Array, kernel: NF4Tensor, bypass: list) -> jax.Array:
  """The layer's own `__call__` on dequantize_nf4(kernel), rematerialized for the backward pass."""
  scope = module.scope
  bias = None
  if getattr(module, "use_bias", False) and scope.has_variable("params", "bias"):
    bias = nn.meta.unbox(scope.get_variable("params", "bias"))
  detached = module.clone(parent=None)

  def run(x, q, bias):
    params = {"kernel": dequantize_nf4(q)}
    if bias is not None:
      params["bias"] = bias
    bypass[0] = True  # the detached layer's own call must not be intercepted again
    try:
      return detached.apply({"params": params}, x)
    finally:
      bypass[0] = False

  return jax.checkpoint(run)(x, kernel, bias)


@contextlib.contextmanager
def lora_interceptor(adapters: PyTree = None, *, deterministic: bool = True) -> Iterator[None]:
  """Context in which `nn.Dense` / `nn.DenseGeneral` layers apply LoRA and read NF4 kernels.

  Inside it, a Dense layer whose param path (module path + 'kernel') has an adapter returns
  `layer(x) + (alpha / r) * dropout(x) A B`, and one whose kernel is an `NF4Tensor` computes
  `layer(x)` on the kernel dequantized for that call only (see the module docstring). Other
  layers are untouched. Enter it inside the function you jit / differentiate.

  Args:
    adapters: from `init_lora` / `load_adapters` (None: only NF4 reading).
    deterministic: disable adapter dropout; when False, layers draw from the 'dropout' RNG
      stream, so pass `rngs={'dropout': key}` to `apply`.
  """
  flat = _flatten_adapters(adapters)
  bypass = [False]

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if (bypass[0] or context.method_name != "__call__"
        or not isinstance(module, (nn.Dense, nn.DenseGeneral))):
      return next_fun(*args, **kwargs)
    scope = module.scope
    if scope is None or not scope.has_variable("params", "kernel"):
      return next_fun(*args, **kwargs)  # init, or no params to adapt
    kernel = nn.meta.unbox(scope.get_variable("params", "kernel"))
    path = tuple(module.path) + ("kernel",)
    lora = flat.get(path)
    quantized = is_nf4(kernel)
    if lora is None and not quantized:
      return next_fun(*args, **kwargs)
    x = args[0] if args else kwargs["inputs"]
    y = _quantized_call(module, x, kernel, bypass) if quantized else next_fun(*args, **kwargs)
    if lora is not None:
      y = y + _lora_delta(module, x, lora, path, deterministic).astype(y.dtype)
    return y

  with nn.intercept_methods(interceptor):
    yield


def lora_apply(model: nn.Module, variables: Mapping[str, Any], adapters: PyTree, *args,
               lora_deterministic: bool = True, **apply_kwargs) -> Any:
  """`model.apply(variables, *args, **apply_kwargs)` with adapters and NF4 kernels applied.

  Args:
    model: any Flax linen module built from `nn.Dense` / `nn.DenseGeneral` layers.
    variables: e.g. {'params': base_params} (base params may hold `NF4Tensor` kernels).
    adapters: from `init_lora` / `load_adapters`.
    *args: model inputs.
    lora_deterministic: disable adapter dropout (set False in training, with a 'dropout' RNG).
    **apply_kwargs: passed to `model.apply` (rngs, mutable, method, model kwargs).
  """
  with lora_interceptor(adapters, deterministic=lora_deterministic):
    return model.apply(variables, *args, **apply_kwargs)


# ----------------------------------------------------------------------------------------------
# Materializing path: W_eff = dequant(W) + s * A B.


def _check_adapters_fit(base_params: PyTree, flat: Mapping[ParamPath, LoRAWeights]) -> None:
  base = flatten_params(base_params)
  for path, lora in flat.items():
    name = "/".join(path)
    if path not in base:
      raise ValueError(f"adapter {name!r} has no kernel at that path in the base params")
    shape = tuple(base[path].shape)
    if shape != (lora.a.shape[0], lora.b.shape[1]):
      raise ValueError(f"adapter {name!r} is for a {(lora.a.shape[0], lora.b.shape[1])} kernel "
                       f"but the base kernel is {shape}")


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
  flat = _flatten_adapters(adapters)
  _check_adapters_fit(base_params, flat)
  use_dropout = not deterministic and any(l.dropout > 0.0 for l in flat.values())
  if use_dropout and rng is None:
    raise ValueError("apply_lora(deterministic=False) with adapter dropout needs an rng")
  index = {path: i for i, path in enumerate(sorted(flat))}

  def effective(path, leaf):
    path = tuple(_key_name(k) for k in path)
    w = dequantize_nf4(leaf) if is_nf4(leaf) else leaf
    lora = flat.get(path)
    if lora is None:
      return w
    a = lora.a.astype(jnp.float32)
    if use_dropout and lora.dropout > 0.0:
      keep = jax.random.bernoulli(jax.random.fold_in(rng, index[path]), 1.0 - lora.dropout,
                                  (a.shape[0],))
      a = a * (keep.astype(jnp.float32) / (1.0 - lora.dropout))[:, None]
    delta = lora.scaling * (a @ lora.b.astype(jnp.float32))
    return (w.astype(jnp.float32) + delta).astype(w.dtype)

  return jax.tree_util.tree_map_with_path(effective, base_params, is_leaf=is_nf4)


def merge_lora(base_params: PyTree, adapters: PyTree) -> PyTree:
  """Full-precision params with the adapters merged in (for export): dequant(W) + s A B."""
  return apply_lora(base_params, adapters, deterministic=True)


# ----------------------------------------------------------------------------------------------
# Bookkeeping and storage.


class LoRAParamCount(NamedTuple):
  trainable: int  # adapter parameters (A and B)
  base: int  # logical base parameters (an NF4 kernel counts its original shape)
  fraction: float  # trainable / base


def count_lora_params(adapters: PyTree, base_params: PyTree) -> LoRAParamCount:
  """Trainable adapter parameters and their fraction of the base model's parameters."""
  trainable = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(adapters))
  base = sum(int(np.prod(leaf.shape)) for leaf in flatten_params(base_params).values())
  return LoRAParamCount(trainable, base, trainable / base if base else float("nan"))


def save_adapters(path: str, adapters: PyTree, metadata: Mapping[str, Any] | None = None, *,
                  overwrite: bool = False) -> None:
  """Saves the adapters alone (A, B arrays + alpha/dropout/rank per kernel) with Orbax.

  Args:
    path: checkpoint directory (created; must not exist unless `overwrite`).
    adapters: from `init_lora` or training.
    metadata: JSON-serializable extras (patterns, base model id, step, ...).
    overwrite: replace an existing checkpoint at `path`.
  """
  path = os.path.abspath(path)
  if os.path.exists(path) and not overwrite:
    raise FileExistsError(f"adapter checkpoint already exists: {path}")
  flat = _flatten_adapters(adapters)
  if not flat:
    raise ValueError("no adapters to save")
  arrays = _nest({p: {"lora_a": l.a, "lora_b": l.b} for p, l in flat.items()})
  info = {
      "format": _FORMAT,
      "adapters": [{"path": list(p), "alpha": l.alpha, "dropout": l.dropout, "rank": l.rank}
                   for p, l in flat.items()],
      "metadata": dict(metadata or {}),
  }
  checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
  try:
    checkpointer.save(path, ocp.args.Composite(adapters=ocp.args.StandardSave(arrays),
                                               info=ocp.args.JsonSave(info)), force=overwrite)
  finally:
    checkpointer.close()


def load_adapters(path: str) -> tuple[dict, dict]:
  """Restores what `save_adapters` wrote.

  Returns:
    (adapters, metadata): the adapters as `init_lora` builds them, and the saved metadata.
  """
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"no adapter checkpoint at {path}")
  checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
  try:
    restored = checkpointer.restore(path, ocp.args.Composite(
        adapters=ocp.args.StandardRestore(), info=ocp.args.JsonRestore()))
  finally:
    checkpointer.close()
  info = restored["info"]
  if not isinstance(info, dict) or info.get("format") != _FORMAT:
    raise ValueError(f"{path}: not an adapter checkpoint of format {_FORMAT!r}")
  arrays = restored["adapters"]
  out = {}
  for entry in info["adapters"]:
    node = arrays
    for key in entry["path"]:
      node = node[key]
    out[tuple(entry["path"])] = LoRAWeights(a=jnp.asarray(node["lora_a"]),
                                            b=jnp.asarray(node["lora_b"]),
                                            alpha=float(entry["alpha"]),
                                            dropout=float(entry["dropout"]))
  return _nest(out), dict(info["metadata"])
