"""bitsandbytes' 8-bit blockwise quantization over its signed dynamic map (used by NF4 for
double quantization of the absmax values).

`create_dynamic_map` rebuilds bitsandbytes' `functional.create_dynamic_map` bit for bit (the
float32 `torch.linspace` it calls included); `quantize_blockwise_8bit` /
`dequantize_blockwise_8bit` follow the CUDA kernels `kQuantizeBlockwise<General8bit>` (absmax per
block, multiply by the float32 reciprocal, the binary search of `dQuantize<0>`) and
`kDequantizeBlockwise`. Checked in tests/adapters/test_nf4.py.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np


def _torch_linspace_f32(start: float, end: float, steps: int) -> np.ndarray:
  """`torch.linspace(start, end, steps, dtype=torch.float32)` on CPU, bit for bit.

  torch's CPU kernel computes `start + step * i` for the first half and `end - step * (steps - 1
  - i)` for the second, in float32 with `step = (end - start) / (steps - 1)`. On the x86-64
  (AVX2 kernels) and aarch64 builds the multiply-add is compiled to a fused multiply-add, i.e. a
  single rounding of the exact value. Here the exact value fits in float64 (a 24-bit step times
  an index below 2**8 plus a 24-bit endpoint of similar magnitude), so float64 arithmetic
  followed by one rounding to float32 reproduces it.
  """
  start32, end32 = np.float32(start), np.float32(end)
  if steps == 1:
    return np.array([start32], np.float32)
  step = np.float32(np.float32(end32 - start32) / np.float32(steps - 1))
  half = steps // 2
  out = np.empty(steps, np.float32)
  for i in range(steps):
    if i < half:
      out[i] = np.float32(float(start32) + float(step) * i)
    else:
      out[i] = np.float32(float(end32) - float(step) * (steps - 1 - i))
  return out


def create_dynamic_map(signed: bool = True, max_exponent_bits: int = 7,
                       total_bits: int = 8) -> np.ndarray:
  """bitsandbytes' dynamic 8-bit quantization map (`functional.create_dynamic_map`).

  For each exponent i < `max_exponent_bits`, `2**(i + non_sign_bits - max_exponent_bits) + 1`
  boundaries are spread over [0.1, 1] (float32 `torch.linspace`), their adjacent means are
  scaled by `10**(i - max_exponent_bits + 1)` (float32 multiply) and added with both signs; 0
  and 1 are appended and the list sorted. With the defaults the signed map has 127 negative
  values from -0.99296875, an exact 0 at index 127, and 128 positive values up to 1.0.

  Returns:
    float32 [256], sorted ascending.
  """
  data: list[float] = []
  non_sign_bits = total_bits - 1
  additional_items = 2 ** (non_sign_bits - max_exponent_bits) - 1
  i = 0
  for i in range(max_exponent_bits):
    if signed:
      fraction_items = int(2 ** (i + non_sign_bits - max_exponent_bits) + 1)
    else:
      fraction_items = int(2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1)
    boundaries = _torch_linspace_f32(0.1, 1.0, fraction_items)
    means = (boundaries[:-1] + boundaries[1:]) / np.float32(2.0)
    scale = np.float32(10 ** (-(max_exponent_bits - 1) + i))
    data += (scale * means).tolist()
    if signed:
      data += (-scale * means).tolist()
  if additional_items > 0:
    boundaries = _torch_linspace_f32(0.1, 1.0, additional_items + 1)
    means = (boundaries[:-1] + boundaries[1:]) / np.float32(2.0)
    scale = np.float32(10 ** (-(max_exponent_bits - 1) + i))
    data += (scale * means).tolist()
    if signed:
      data += (-scale * means).tolist()
  data += [0.0, 1.0]
  if len(data) != 2 ** total_bits:
    raise ValueError(f"dynamic map with max_exponent_bits={max_exponent_bits}, "
                     f"total_bits={total_bits} has {len(data)} values, not {2 ** total_bits}")
  data += [0.0] * (256 - len(data))
  return np.sort(np.asarray(data, dtype=np.float32))


DYNAMIC_CODE = create_dynamic_map(signed=True)


def to_blocks(flat: jax.Array, block_size: int) -> jax.Array:
  """[n] -> [ceil(n / block_size), block_size], zero-padded (as the kernels load past the end)."""
  n = flat.shape[0]
  nb = -(-n // block_size)
  return jnp.pad(flat, (0, nb * block_size - n)).reshape(nb, block_size)


def dynamic_codes(x: jax.Array, code: jax.Array) -> jax.Array:
  """`dQuantize<0>`: bitsandbytes' binary search for the nearest of 256 sorted codes.

  Seven halving steps from pivot 127, then a midpoint test against the neighbour on the side of
  x. Ties at an exact midpoint keep the pivot; NaN gets 0.

  Args:
    x: float32 [...], scaled to [-1, 1].
    code: float32 [256], sorted.

  Returns:
    uint8 [...] indices into `code`.
  """
  pivot = jnp.full(x.shape, 127, jnp.int32)
  lower_pivot = jnp.zeros(x.shape, jnp.int32)
  upper_pivot = jnp.full(x.shape, 255, jnp.int32)
  lower = jnp.full(x.shape, -1.0, jnp.float32)
  upper = jnp.full(x.shape, 1.0, jnp.float32)
  val = code[pivot]
  for step in (64, 32, 16, 8, 4, 2, 1):
    gt = x > val
    lower_pivot = jnp.where(gt, pivot, lower_pivot)
    lower = jnp.where(gt, val, lower)
    upper_pivot = jnp.where(gt, upper_pivot, pivot)
    upper = jnp.where(gt, upper, val)
    pivot = jnp.where(gt, pivot + step, pivot - step)
    val = code[pivot]
  upper = jnp.where(upper_pivot == 255, code[255], upper)
  lower = jnp.where(lower_pivot == 0, code[0], lower)
  go_up = jnp.where(x > (upper + val) * 0.5, upper_pivot, pivot)
  go_down = jnp.where(x < (lower + val) * 0.5, lower_pivot, pivot)
  return jnp.where(x > val, go_up, go_down).astype(jnp.uint8)


@functools.partial(jax.jit, static_argnames=("block_size",))
def _quantize_8bit(flat: jax.Array, code: jax.Array, *, block_size: int):
  n = flat.shape[0]
  blocked = to_blocks(flat, block_size)
  absmax = jnp.max(jnp.abs(blocked), axis=1)
  scaled = blocked * (1.0 / absmax)[:, None]
  return dynamic_codes(scaled, code).reshape(-1)[:n], absmax


@functools.partial(jax.jit, static_argnames=("block_size",))
def _dequantize_8bit(codes: jax.Array, absmax: jax.Array, code: jax.Array, *, block_size: int):
  n = codes.shape[0]
  return (code[to_blocks(codes, block_size)] * absmax[:, None]).reshape(-1)[:n]


def quantize_blockwise_8bit(x: jax.Array, block_size: int = 256,
                            code: Optional[jax.Array] = None) -> tuple[jax.Array, jax.Array]:
  """bitsandbytes `quantize_blockwise` (CUDA `kQuantizeBlockwise<General8bit>`).

  Args:
    x: float [n] (flattened if not 1-D).
    block_size: values per block.
    code: float32 [256] sorted map; default `DYNAMIC_CODE`.

  Returns:
    (codes uint8 [n], absmax float32 [ceil(n / block_size)]).
  """
  code = jnp.asarray(DYNAMIC_CODE if code is None else code, jnp.float32)
  return _quantize_8bit(jnp.asarray(x, jnp.float32).reshape(-1), code, block_size=block_size)


def dequantize_blockwise_8bit(codes: jax.Array, absmax: jax.Array, block_size: int = 256,
                              code: Optional[jax.Array] = None) -> jax.Array:
  """Inverse of `quantize_blockwise_8bit`: `code[q] * absmax[block]`, float32 [n]."""
  code = jnp.asarray(DYNAMIC_CODE if code is None else code, jnp.float32)
  return _dequantize_8bit(codes, absmax, code, block_size=block_size)


