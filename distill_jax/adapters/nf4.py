"""Blockwise 4-bit NormalFloat (NF4) quantization with double quantization, as bitsandbytes does it.

This is a JAX re-implementation of `bitsandbytes.functional.quantize_4bit(w, blocksize=64,
quant_type="nf4", compress_statistics=True)` and of the matching `dequantize_4bit`, following
the CUDA kernels (`kQuantizeBlockwise`, `dQuantizeNF4`, `dQuantize<0>`, `kDequantizeBlockwise`)
of bitsandbytes 0.50. The algorithm:

1. The weight is flattened in row-major order to n values (cast to float32, which is exact for
   bf16/fp16/fp32) and cut into blocks of `block_size` (64) values; the last block may be short.
2. `absmax[b] = max |w|` over the valid values of block b (float32).
3. Every value is scaled by the float32 reciprocal, `x = w * (1 / absmax[b])` (a multiply by the
   reciprocal, not a division, as in the CUDA kernel), and mapped to the nearest of the 16 NF4
   code values `NF4_CODE`. bitsandbytes does this with a decision tree whose thresholds
   `NF4_THRESHOLDS` are the midpoints between adjacent codes and whose tests are strict
   (`x > t`): a value exactly on a threshold gets the LOWER code. In an all-zero block
   `0 * (1 / 0)` is NaN, which fails every test and gets code 0 (-1.0); it dequantizes to
   `-1.0 * 0 = -0.0`.
4. Two codes per byte: element 2i in the HIGH nibble, element 2i+1 in the low nibble. An odd n is
   padded with one element whose value is 0 (the kernel loads 0 past the end), i.e. the code of
   0.0 (7) in the last low nibble; the packed array has ceil(n / 2) bytes (bitsandbytes stores
   it as a [ceil(n / 2), 1] uint8 tensor; we keep it flat).
5. Double quantization (`compress_statistics=True`): `offset = mean(absmax)`; the centered values
   `absmax - offset` are quantized with 8-bit blockwise quantization (block 256) over the signed
   dynamic map `create_dynamic_map(signed=True)`: per 256-block `scale = max |c|`, `x = c * (1 /
   scale)`, and the index comes from the binary search of `dQuantize<0>` (nearest code; at an
   exact midpoint the search keeps the code it compared last). Storage: one uint8 per 64-block,
   one float32 per 256 such blocks, one float32 offset.

Dequantization (runs under `jax.jit`): `absmax = dyn[q] * scale + offset` with two float32
roundings (bitsandbytes adds the offset in a separate op), then `w = NF4_CODE[c] * absmax`, cast
to the original dtype.

Storage with the defaults: 4 + 8/64 + 32/(64*256) bits = 4.127 bits per parameter (a 4096x4096
matrix: 8,388,608 + 262,144 + 4,096 + 4 bytes; the two code tables, 1 KiB shared by all tensors,
are not counted, as in the QLoRA paper).

Known, deliberate differences from bitsandbytes:
- `offset` is XLA's float32 mean of absmax; bitsandbytes takes torch's float32 mean, whose
  reduction order depends on the device. The two may differ in the last bit, which can move an
  8-bit absmax code across a rounding boundary in rare cases.
- We follow the CUDA kernels. bitsandbytes' CPU path differs from CUDA in places: it gives an
  all-zero block code 7 (0.0) rather than 0 (both dequantize to zero), divides the last partial
  block by absmax instead of multiplying by the reciprocal, and its C++ 8-bit search
  (`quantize_block` in `csrc/common.cpp`) does not always return the nearest code.

The 8-bit part (dynamic map, blockwise quantization, binary search) lives in `blockwise8.py`.

Checked against bitsandbytes 0.50.2 (CPU, torch 2.13) in tests/adapters/test_nf4.py: identical
NF4 bytes for non-zero blocks, identical dynamic map, and bit-identical dequantization of
bitsandbytes' own quantized state.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Optional

from flax import struct
import jax
import jax.numpy as jnp
import numpy as np

from distill_jax.adapters.blockwise8 import (DYNAMIC_CODE, create_dynamic_map,
                                             dequantize_blockwise_8bit, dynamic_codes,
                                             quantize_blockwise_8bit, to_blocks)

__all__ = [
    "NF4_CODE", "NF4_THRESHOLDS", "DYNAMIC_CODE", "NF4Tensor", "is_nf4", "nf4_codes",
    "quantize_nf4", "dequantize_nf4", "dequantize_absmax", "nbytes", "bits_per_param",
    "create_dynamic_map", "dynamic_codes", "quantize_blockwise_8bit", "dequantize_blockwise_8bit",
]

# The 16 NF4 values (bitsandbytes `get_4bit_type("nf4")`, the CUDA `dDequantizeNF4` table):
# quantiles of N(0, 1) normalized to [-1, 1]; asymmetric (8 positive, 7 negative) with an exact 0.
NF4_CODE = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
], dtype=np.float32)

# The decision-tree thresholds of bitsandbytes' `dQuantizeNF4`, sorted: code = #{t : x > t}.
NF4_THRESHOLDS = np.array([
    -0.8480964004993439, -0.6106329262256622, -0.4599952697753906, -0.33967943489551544,
    -0.23460740596055984, -0.13791173323988914, -0.045525018125772476, 0.03979014977812767,
    0.1202552504837513, 0.2035212516784668, 0.2920137718319893, 0.3893125355243683,
    0.5016634166240692, 0.6427869200706482, 0.8614784181118011,
], dtype=np.float32)


@struct.dataclass
class NF4Tensor:
  """A weight stored as blockwise NF4 codes (a pytree: the arrays are leaves).

  Attributes:
    packed: uint8 [ceil(n / 2)], two 4-bit codes per byte, first element in the high nibble.
    absmax: per-block absmax, uint8 [n_blocks] (8-bit codes of `absmax - offset`) with double
      quantization, else float32 [n_blocks]. n_blocks = ceil(n / block_size).
    absmax_scale: float32 [ceil(n_blocks / dq_block_size)], the absmax of each 8-bit block, or
      None without double quantization.
    absmax_offset: float32 [], the mean absmax subtracted before 8-bit quantization, or None.
    shape: the original shape (static).
    dtype: the original dtype name, e.g. "float32" or "bfloat16" (static).
    block_size: values per NF4 block (static).
    dq_block_size: absmax values per 8-bit block (static; unused without double quantization).
  """

  packed: jax.Array
  absmax: jax.Array
  absmax_scale: Optional[jax.Array]
  absmax_offset: Optional[jax.Array]
  shape: tuple[int, ...] = struct.field(pytree_node=False)
  dtype: str = struct.field(pytree_node=False)
  block_size: int = struct.field(pytree_node=False, default=64)
  dq_block_size: int = struct.field(pytree_node=False, default=256)

  @property
  def double_quant(self) -> bool:
    return self.absmax_scale is not None

  @property
  def size(self) -> int:
    """Number of (logical) parameters."""
    return math.prod(self.shape)

  @property
  def ndim(self) -> int:
    return len(self.shape)

  @property
  def num_blocks(self) -> int:
    return -(-self.size // self.block_size)

  def dequantize(self, dtype: Any = None) -> jax.Array:
    """See `dequantize_nf4`."""
    return dequantize_nf4(self, dtype)


def is_nf4(x: Any) -> bool:
  """True for an `NF4Tensor` (use as `is_leaf` when walking param trees)."""
  return isinstance(x, NF4Tensor)


def _check_block_sizes(block_size: int, dq_block_size: int) -> None:
  if not isinstance(block_size, int) or block_size < 2 or block_size % 2:
    raise ValueError(f"block_size must be an even integer >= 2, got {block_size!r}")
  if not isinstance(dq_block_size, int) or dq_block_size < 1:
    raise ValueError(f"dq_block_size must be a positive integer, got {dq_block_size!r}")


def nf4_codes(x: jax.Array) -> jax.Array:
  """`dQuantizeNF4`: the NF4 code of values already scaled to [-1, 1].

  Args:
    x: float32 [...].

  Returns:
    uint8 [...], `#{t in NF4_THRESHOLDS : x > t}`; exactly the decision tree (ties go down, NaN
    gets 0).
  """
  acc = jnp.zeros(x.shape, jnp.uint8)
  for t in NF4_THRESHOLDS:
    acc = acc + (x > t).astype(jnp.uint8)
  return acc


def _no_contract(x: jax.Array) -> jax.Array:
  # XLA:CPU fuses `a * b + c` into a fused multiply-add (one rounding); bitsandbytes rounds the
  # product first. Routing the product through a select that XLA does not simplify keeps the two
  # roundings (checked bit-exactly by tests/adapters/test_nf4.py). NaN stays NaN.
  return jnp.where(x == x, x, jnp.float32(jnp.nan))


@functools.partial(jax.jit, static_argnames=("block_size", "double_quant", "dq_block_size"))
def _quantize_flat(flat: jax.Array, *, block_size: int, double_quant: bool, dq_block_size: int):
  n = flat.shape[0]
  blocked = to_blocks(flat, block_size)
  absmax = jnp.max(jnp.abs(blocked), axis=1)
  scaled = blocked * (1.0 / absmax)[:, None]
  codes = nf4_codes(scaled).reshape(-1)[:2 * ((n + 1) // 2)].reshape(-1, 2)
  packed = (codes[:, 0] << 4) | codes[:, 1]
  if not double_quant:
    return packed, absmax, None, None
  # _no_contract: XLA may turn the mean into sum * (1 / n) and fuse it into the subtraction as a
  # fused multiply-add; the subtraction must use the same rounded offset that is stored.
  offset = _no_contract(jnp.mean(absmax))
  qabsmax, scale = quantize_blockwise_8bit(absmax - offset, dq_block_size, DYNAMIC_CODE)
  return packed, qabsmax, scale, offset


def quantize_nf4(w: jax.Array, block_size: int = 64, double_quant: bool = True,
                 dq_block_size: int = 256) -> NF4Tensor:
  """Quantizes a float array to blockwise NF4 (bitsandbytes `quantize_4bit`, quant_type "nf4").

  Works eagerly and under `jax.jit` (the block sizes are static).

  Args:
    w: float [...] (any shape; flattened row-major).
    block_size: values per absmax block (bitsandbytes: 64).
    double_quant: quantize the absmax values to 8 bits ("compress_statistics").
    dq_block_size: absmax values per 8-bit block (bitsandbytes: 256).

  Returns:
    An `NF4Tensor` remembering `w.shape` and `w.dtype`.
  """
  _check_block_sizes(block_size, dq_block_size)
  w = jnp.asarray(w)
  if not jnp.issubdtype(w.dtype, jnp.floating):
    raise TypeError(f"quantize_nf4 needs a floating-point array, got dtype {w.dtype}")
  if w.size == 0:
    raise ValueError(f"cannot quantize an empty array of shape {w.shape}")
  packed, absmax, scale, offset = _quantize_flat(
      w.reshape(-1).astype(jnp.float32), block_size=block_size, double_quant=double_quant,
      dq_block_size=dq_block_size)
  return NF4Tensor(packed=packed, absmax=absmax, absmax_scale=scale, absmax_offset=offset,
                   shape=tuple(int(d) for d in w.shape), dtype=jnp.dtype(w.dtype).name,
                   block_size=block_size, dq_block_size=dq_block_size)


@jax.jit
def dequantize_absmax(q: NF4Tensor) -> jax.Array:
  """The per-block absmax, float32 [n_blocks] (undoing double quantization if used)."""
  if not q.double_quant:
    return q.absmax.astype(jnp.float32)
  scaled = dequantize_blockwise_8bit(q.absmax, q.absmax_scale, q.dq_block_size, DYNAMIC_CODE)
  return _no_contract(scaled) + q.absmax_offset


@functools.partial(jax.jit, static_argnames=("dtype",))
def dequantize_nf4(q: NF4Tensor, dtype: Any = None) -> jax.Array:
  """NF4 codes back to floats: `NF4_CODE[c] * absmax[block]` (bitsandbytes `dequantize_4bit`).

  Jitted (inlined when called inside another jitted function); call it inside the jitted
  function that consumes the weight so the float copy only lives as a temporary.

  Args:
    q: the quantized tensor.
    dtype: output dtype; default the original dtype `q.dtype`.

  Returns:
    [*q.shape] array of `dtype`.
  """
  n = q.size
  absmax = dequantize_absmax(q)
  codes = jnp.stack([q.packed >> 4, q.packed & 0x0F], axis=-1).reshape(-1)
  vals = jnp.asarray(NF4_CODE)[to_blocks(codes, q.block_size)] * absmax[:, None]
  return vals.reshape(-1)[:n].reshape(q.shape).astype(dtype or q.dtype)


def nbytes(q: NF4Tensor, include_code_tables: bool = False) -> int:
  """Bytes held by `q` (works on `jax.eval_shape` results too).

  Args:
    q: the quantized tensor.
    include_code_tables: also count the float32 NF4 table (64 B) and, with double quantization,
      the dynamic 8-bit table (1 KiB); bitsandbytes shares these across tensors.
  """
  total = 0
  for leaf in jax.tree.leaves(q):
    total += int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize
  if include_code_tables:
    total += NF4_CODE.nbytes + (DYNAMIC_CODE.nbytes if q.double_quant else 0)
  return total


def bits_per_param(q: NF4Tensor, include_code_tables: bool = False) -> float:
  """Storage bits per logical parameter (4.127 for block 64 with double quantization)."""
  return 8.0 * nbytes(q, include_code_tables) / q.size
