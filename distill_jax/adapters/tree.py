"""Param-tree plumbing shared by the adapter modules: paths, pattern selection, Dense layouts.

Param paths are tuples of keys, shown '/'-joined (e.g. 'encoder/layers_0/attention/q_proj/kernel');
patterns are regular expressions matched in full (`re.fullmatch`) against the joined path.

A LoRA adapter treats a kernel as a matrix [fan_in, fan_out]. For an `nn.Dense` kernel [d_in,
d_out] that is the kernel itself. An `nn.DenseGeneral` kernel is [*in_dims, *features] (e.g. the
student's attention: query [D, H, Dh] with `features=(H, Dh)`, out [H, Dh, D] with
`axis=(-2, -1)`), and which leading dims are contracted is a property of the layer, not of the
array. `dense_layouts(model, *inputs)` records it for every Dense / DenseGeneral layer by tracing
`model.init` abstractly (`jax.eval_shape`: no FLOPs, no memory).
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, NamedTuple, Sequence, Union

import flax.linen as nn
import jax

from distill_jax.adapters.nf4 import is_nf4

PyTree = Any
ParamPath = tuple[str, ...]
Patterns = Union[str, Sequence[str]]


def key_name(key: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def path_str(path: ParamPath) -> str:
  return "/".join(path)


def flatten_params(params: PyTree) -> dict[ParamPath, Any]:
  """{path: leaf} in tree order; `NF4Tensor`s count as leaves."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(params, is_leaf=is_nf4)
  return {tuple(key_name(k) for k in path): leaf for path, leaf in leaves}


def nest(flat: Mapping[ParamPath, Any]) -> dict:
  """Inverse of `flatten_params` for a dict tree."""
  out: dict = {}
  for path, value in flat.items():
    node = out
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  return out


def select_kernels(params: PyTree, patterns: Patterns, what: str = "pattern") -> list[ParamPath]:
  """Paths of the kernels (leaves with >= 2 dims) whose joined path fully matches a pattern.

  Args:
    params: a param tree (may hold `NF4Tensor`s or `jax.ShapeDtypeStruct`s).
    patterns: one regex or a sequence of them.
    what: how to name the patterns in error messages.

  Returns:
    Matched paths in tree order.

  Raises:
    ValueError: naming every pattern that matches no kernel (and what it matched instead).
  """
  if isinstance(patterns, str):
    patterns = [patterns]
  if not patterns:
    raise ValueError(f"{what}: no patterns given")
  flat = flatten_params(params)
  selected: set[ParamPath] = set()
  for pattern in patterns:
    regex = re.compile(pattern)
    hits = [p for p in flat if regex.fullmatch(path_str(p))]
    kernels = [p for p in hits if len(flat[p].shape) >= 2]
    if not kernels:
      if hits:
        detail = "it matches only 1-D / scalar leaves: " + ", ".join(
            f"{path_str(p)} {tuple(flat[p].shape)}" for p in hits[:5])
      else:
        detail = "param paths look like: " + ", ".join(path_str(p) for p in list(flat)[:5])
      raise ValueError(f"{what} {pattern!r} matches no kernel (>= 2-D leaf) in the param tree; "
                       f"{detail}")
    selected.update(kernels)
  return [p for p in flat if p in selected]


class DenseLayout(NamedTuple):
  """How a Dense / DenseGeneral layer contracts its kernel [*in_dims, *features].

  Attributes:
    in_ndim: number of leading kernel dims contracted with the input (1 for nn.Dense).
    kernel_shape: the kernel's shape.
    layer: the layer's class name.
  """
  in_ndim: int
  kernel_shape: tuple[int, ...]
  layer: str

  @property
  def fan_in(self) -> int:
    return math.prod(self.kernel_shape[:self.in_ndim])

  @property
  def fan_out(self) -> int:
    return math.prod(self.kernel_shape[self.in_ndim:])


def contracting_axes(module: nn.Module, x_ndim: int, name: str) -> tuple[int, ...]:
  """The (sorted, non-negative) input axes a Dense / DenseGeneral layer contracts.

  Raises:
    NotImplementedError: for a DenseGeneral with `batch_dims` (naming the layer `name`).
  """
  if isinstance(module, nn.DenseGeneral):
    if module.batch_dims:
      raise NotImplementedError(f"LoRA on {name}: DenseGeneral with batch_dims="
                                f"{module.batch_dims} is not supported")
    axis = module.axis if isinstance(module.axis, (tuple, list)) else (module.axis,)
    return tuple(sorted(a % x_ndim for a in axis))
  return (x_ndim - 1,)


def dense_layouts(model: nn.Module, *args, rngs: Any = None,
                  **kwargs) -> dict[ParamPath, DenseLayout]:
  """{kernel path: DenseLayout} for every nn.Dense / nn.DenseGeneral layer `model` calls.

  Traces `model.init(rngs, *args, **kwargs)` with `jax.eval_shape` (nothing is computed), so
  `args` may be small example inputs or `jax.ShapeDtypeStruct`s of the right rank.

  Args:
    model: the Flax module whose params will be adapted.
    *args, **kwargs: inputs for `model.init` (e.g. `wave, pad, train=False`).
    rngs: init RNGs (default {'params': key(0)}).
  """
  layouts: dict[ParamPath, DenseLayout] = {}

  def interceptor(next_fun, call_args, call_kwargs, context):
    module = context.module
    if context.method_name != "__call__" or not isinstance(module, (nn.Dense, nn.DenseGeneral)):
      return next_fun(*call_args, **call_kwargs)
    x = call_args[0] if call_args else call_kwargs["inputs"]
    y = next_fun(*call_args, **call_kwargs)
    path = tuple(module.path) + ("kernel",)
    kernel = module.scope.get_variable("params", "kernel")
    if isinstance(module, nn.DenseGeneral) and module.batch_dims:
      return y  # not adaptable; init_lora reports it as missing from the layouts
    in_ndim = len(contracting_axes(module, x.ndim, path_str(path)))
    layouts[path] = DenseLayout(in_ndim, tuple(nn.meta.unbox(kernel).shape),
                                type(module).__name__)
    return y

  def init():
    keys = rngs if rngs is not None else {"params": jax.random.key(0)}
    with nn.intercept_methods(interceptor):
      return model.init(keys, *args, **kwargs)

  jax.eval_shape(init)
  return layouts


def kernel_layout(path: ParamPath, shape: Sequence[int],
                  layouts: Mapping[ParamPath, DenseLayout] | None) -> DenseLayout:
  """The layout to adapt the kernel at `path`: from `layouts`, or [d_in, d_out] for a 2-D one.

  Raises:
    ValueError: an N-D kernel without layouts, a path that is not a Dense/DenseGeneral kernel,
      or a layout whose shape disagrees with the param.
  """
  shape = tuple(int(d) for d in shape)
  name = path_str(path)
  if layouts is None:
    if len(shape) == 2:
      return DenseLayout(1, shape, "Dense")
    raise ValueError(f"{name} is a {len(shape)}-D kernel {shape}: which of its dims are the "
                     "layer's inputs depends on the layer; pass "
                     "layouts=dense_layouts(model, *example_inputs)")
  if path not in layouts:
    raise ValueError(f"{name} {shape} is not the kernel of an nn.Dense / nn.DenseGeneral layer "
                     f"(layers found: {', '.join(path_str(p) for p in list(layouts)[:4])}, ...); "
                     "LoRA adapts Dense layers only")
  layout = layouts[path]
  if tuple(layout.kernel_shape) != shape:
    raise ValueError(f"{name}: layouts say kernel shape {tuple(layout.kernel_shape)} but the "
                     f"param is {shape}; were the layouts traced from this model?")
  return layout
