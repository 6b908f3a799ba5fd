"""Tests for distill_jax.adapters.nf4 (blockwise NF4 + double quantization).

References used:
1. bitsandbytes itself (`test_matches_bitsandbytes`, marked `torch`), where bitsandbytes 0.50
   and PyTorch are installed; skipped otherwise (the project's requirements install neither).
   It runs bitsandbytes' CPU build, which follows the CUDA kernels except where that test notes.
2. Always: an independent NumPy re-statement of bitsandbytes' documented algorithm, written
   differently from the module on purpose: NF4 codes by an argmin over |x - code| in float64
   (exact ties to the lower code) instead of threshold counting; 8-bit absmax codes by an argmin
   over the 256 dynamic-map values instead of a port of the CUDA binary search; explicit
   per-block Python loops, explicit nibble packing, NumPy float32 dequantization. The dynamic map
   is checked against golden values of bitsandbytes' `create_dynamic_map()` (computed by torch).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.adapters import nf4

# bitsandbytes `get_4bit_type("nf4")` / CUDA `dDequantizeNF4` values.
BNB_NF4 = [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
]

# (index, value) of bitsandbytes 0.50 `create_dynamic_map(signed=True)` as torch 2.x computes it
# on x86-64 (float32 linspace with a fused multiply-add); several differ by one ulp from a naive
# float32 or float64 construction.
BNB_DYNAMIC_GOLDEN = [
    (0, -0.992968738079071), (20, -0.7117187976837158), (30, -0.5710937976837158),
    (36, -0.48671871423721313), (126, -5.500000384017767e-07), (127, 0.0),
    (135, 0.00015625001105945557), (143, 0.001281249918974936), (224, 0.5710937976837158),
    (226, 0.5992187261581421), (229, 0.6414062976837158), (254, 0.992968738079071), (255, 1.0),
]


# ------------------------------------------------------------------------------ reference


def ref_nearest(x: np.ndarray, code: np.ndarray) -> np.ndarray:
  """Index of the nearest code (float64 distances, first index on ties); NaN -> 0."""
  x = np.asarray(x, np.float64)
  dist = np.abs(x[:, None] - np.asarray(code, np.float64)[None, :])
  idx = np.argmin(dist, axis=1)
  idx[np.isnan(x)] = 0
  return idx.astype(np.uint8)


def ref_blockwise(flat: np.ndarray, block: int, code: np.ndarray):
  """Blockwise absmax quantization; returns (codes list, absmax float32 array)."""
  codes, absmax = [], []
  for start in range(0, len(flat), block):
    chunk = np.asarray(flat[start:start + block], np.float32)
    m = np.float32(np.max(np.abs(chunk)))
    absmax.append(m)
    if m == 0:
      codes += [0] * len(chunk)  # bitsandbytes: 0 * (1 / 0) = NaN -> code 0
    else:
      inv = np.float32(1.0) / m
      codes += ref_nearest(chunk * inv, code).tolist()
  return codes, np.array(absmax, np.float32)


def ref_quantize(w: np.ndarray, block: int = 64, offset=None, dq_block: int = 256):
  """bitsandbytes quantize_4bit(nf4) restated; `offset` given -> double quantization."""
  flat = np.asarray(w, np.float32).reshape(-1)
  codes, absmax = ref_blockwise(flat, block, np.array(BNB_NF4))
  if len(flat) % 2:
    codes.append(7 if absmax[-1] != 0 else 0)  # the padded element is 0.0
  packed = bytearray()
  for i in range(0, len(codes), 2):
    packed.append((codes[i] << 4) | codes[i + 1])
  out = {"packed": np.frombuffer(bytes(packed), np.uint8), "absmax": absmax}
  if offset is not None:
    centered = (absmax - np.float32(offset)).astype(np.float32)
    q8, scale = ref_blockwise(centered, dq_block, nf4.DYNAMIC_CODE)
    out["q8"] = np.array(q8, np.uint8)
    out["scale"] = scale
  return out


def ref_dequantize(packed, absmax, shape, block=64):
  codes = []
  for byte in packed:
    codes += [int(byte) >> 4, int(byte) & 0xF]
  n = math.prod(shape)
  vals = np.array([np.float32(BNB_NF4[c]) * absmax[i // block] for i, c in enumerate(codes[:n])],
                  np.float32)
  return vals.reshape(shape)


def ref_dequantize_absmax(q8, scale, offset, dq_block=256):
  out = np.empty(len(q8), np.float32)
  for i, c in enumerate(q8):
    out[i] = np.float32(nf4.DYNAMIC_CODE[c] * scale[i // dq_block]) + np.float32(offset)
  return out


def weights(shape, seed=0, dtype=np.float32):
  return (np.random.default_rng(seed).standard_normal(shape) * 0.05).astype(dtype)


# ------------------------------------------------------------------------------ code tables


def test_nf4_code_table_is_bitsandbytes():
  np.testing.assert_array_equal(nf4.NF4_CODE, np.array(BNB_NF4, np.float32))
  assert nf4.NF4_CODE[7] == 0.0 and np.all(np.diff(nf4.NF4_CODE) > 0)
  assert (nf4.NF4_CODE > 0).sum() == 8 and (nf4.NF4_CODE < 0).sum() == 7  # asymmetric
  mids = (np.float64(nf4.NF4_CODE[:-1]) + nf4.NF4_CODE[1:]) / 2
  np.testing.assert_allclose(nf4.NF4_THRESHOLDS, mids, rtol=0, atol=1e-7)


def test_dynamic_map_matches_bitsandbytes():
  code = nf4.DYNAMIC_CODE
  assert code.shape == (256,) and code.dtype == np.float32
  for i, v in BNB_DYNAMIC_GOLDEN:
    assert code[i] == np.float32(v), (i, float(code[i]), v)
  assert np.all(np.diff(code) > 0)
  np.testing.assert_array_equal(code[:127], -code[128:255][::-1])  # symmetric but for 1.0
  assert (code < 0).sum() == 127


def test_threshold_ties_go_to_the_lower_code():
  # With 1.0 in the block, absmax = 1 and x * (1 / absmax) = x exactly.
  t = nf4.NF4_THRESHOLDS
  vals = np.concatenate([[1.0], t, np.nextafter(t, np.float32(np.inf)), [-1.0]]).astype(np.float32)
  q = nf4.quantize_nf4(vals, block_size=64, double_quant=False)
  packed = np.asarray(q.packed)
  codes = np.stack([packed >> 4, packed & 0xF], -1).reshape(-1)[:len(vals)]
  np.testing.assert_array_equal(codes[1:16], np.arange(15))
  np.testing.assert_array_equal(codes[16:31], np.arange(1, 16))
  assert codes[0] == 15 and codes[31] == 0


# ------------------------------------------------------------------------------ vs reference


@pytest.mark.parametrize("shape,block", [
    ((64, 64), 64), ((37,), 64), ((3, 5, 7), 64), ((130, 3), 64), ((333,), 32), ((40, 50), 128),
])
def test_packed_and_absmax_match_reference(shape, block):
  w = weights(shape, seed=sum(shape) + block)
  q = nf4.quantize_nf4(w, block_size=block, double_quant=False)
  ref = ref_quantize(w, block)
  n = math.prod(shape)
  assert q.packed.shape == ((n + 1) // 2,) and q.packed.dtype == jnp.uint8
  np.testing.assert_array_equal(np.asarray(q.packed), ref["packed"])
  np.testing.assert_array_equal(np.asarray(q.absmax), ref["absmax"])
  got = np.asarray(nf4.dequantize_nf4(q))
  np.testing.assert_array_equal(got, ref_dequantize(ref["packed"], ref["absmax"], shape, block))


@pytest.mark.parametrize("shape", [(256, 96), (1001,), (64, 257)])
def test_double_quant_matches_reference(shape):
  w = weights(shape, seed=shape[0])
  q = nf4.quantize_nf4(w)  # block 64, double quant, 256
  ref_absmax = ref_quantize(w)["absmax"]
  # The offset is a float32 mean; its last bit depends on the summation order (in bitsandbytes
  # too), so it is checked to float precision and then fed to the reference.
  offset = float(q.absmax_offset)
  assert offset == pytest.approx(float(np.mean(ref_absmax.astype(np.float64))), rel=2e-7)
  ref = ref_quantize(w, offset=offset)
  np.testing.assert_array_equal(np.asarray(q.packed), ref["packed"])
  assert q.absmax.dtype == jnp.uint8 and q.absmax.shape == (-(-math.prod(shape) // 64),)
  np.testing.assert_array_equal(np.asarray(q.absmax), ref["q8"])
  np.testing.assert_array_equal(np.asarray(q.absmax_scale), ref["scale"])
  absmax = ref_dequantize_absmax(ref["q8"], ref["scale"], offset)
  np.testing.assert_array_equal(np.asarray(nf4.dequantize_absmax(q)), absmax)
  expected = ref_dequantize(ref["packed"], absmax, shape)
  np.testing.assert_array_equal(np.asarray(nf4.dequantize_nf4(q)), expected)
  np.testing.assert_array_equal(np.asarray(jax.jit(nf4.dequantize_nf4)(q)), expected)


def test_bfloat16_input_keeps_dtype():
  w = weights((48, 40), seed=3).astype(jnp.bfloat16)
  q = nf4.quantize_nf4(w)
  assert q.dtype == "bfloat16"
  ref = ref_quantize(np.asarray(w, np.float32), offset=float(q.absmax_offset))
  np.testing.assert_array_equal(np.asarray(q.packed), ref["packed"])
  assert nf4.dequantize_nf4(q).dtype == jnp.bfloat16
  assert nf4.dequantize_nf4(q, jnp.float32).dtype == jnp.float32


def test_8bit_blockwise_is_nearest_code():
  rng = np.random.default_rng(5)
  x = np.concatenate([rng.uniform(-1, 1, 3000), rng.normal(0, 1e-3, 1000), nf4.DYNAMIC_CODE,
                      [-1.0, 0.0, 1.0]]).astype(np.float32)
  codes, absmax = nf4.quantize_blockwise_8bit(x, 256)
  ref_codes, ref_absmax = ref_blockwise(x, 256, nf4.DYNAMIC_CODE)
  np.testing.assert_array_equal(np.asarray(absmax), ref_absmax)
  np.testing.assert_array_equal(np.asarray(codes), np.array(ref_codes, np.uint8))
  # Code values themselves (scaled by 1 in a block whose absmax is 1) map to their own index.
  own, _ = nf4.quantize_blockwise_8bit(nf4.DYNAMIC_CODE, 256)
  np.testing.assert_array_equal(np.asarray(own), np.arange(256))


# ------------------------------------------------------------------------------ edge cases


def test_odd_numel_pads_with_code_of_zero():
  w = weights((5, 13), seed=9)  # 65 values: a full block and a 1-value block
  q = nf4.quantize_nf4(w, double_quant=False)
  assert q.packed.shape == (33,)
  assert int(q.packed[-1]) & 0xF == 7
  flat = w.reshape(-1)
  np.testing.assert_array_equal(np.asarray(q.absmax), [np.abs(flat[:64]).max(), abs(flat[64])])
  np.testing.assert_allclose(np.asarray(nf4.dequantize_nf4(q)).reshape(-1)[64],
                             w.reshape(-1)[64], rtol=1e-6)  # a lone value is its own absmax


def test_zero_blocks():
  w = weights((4, 64), seed=11)
  w[1] = 0.0
  q = nf4.quantize_nf4(w, double_quant=False)
  assert float(q.absmax[1]) == 0.0
  np.testing.assert_array_equal(np.asarray(q.packed)[32:64], 0)  # NaN scale -> code 0
  out = np.asarray(nf4.dequantize_nf4(q))
  assert np.all(out[1] == 0.0) and np.all(np.isfinite(out))
  # With double quantization the zero absmax comes back within the 8-bit error of the absmax.
  qd = nf4.quantize_nf4(w)
  bound = float(np.max(np.asarray(qd.absmax_scale))) * 0.0071
  assert np.max(np.abs(np.asarray(nf4.dequantize_nf4(qd))[1])) <= bound


def test_roundtrip_error_bounds():
  w = np.random.default_rng(0).standard_normal((512, 384)).astype(np.float32)
  half_gap = float(np.max(np.diff(nf4.NF4_CODE))) / 2  # 0.1385
  absmax = np.max(np.abs(w.reshape(-1, 64)), axis=1)
  for dq in (False, True):
    q = nf4.quantize_nf4(w, double_quant=dq)
    got = np.asarray(nf4.dequantize_nf4(q)).reshape(-1, 64)
    absmax_hat = np.asarray(nf4.dequantize_absmax(q))
    absmax_err = np.abs(absmax_hat - absmax)
    if dq:
      # Nearest dynamic code: half the largest gap (0.0070) of the map, or the distance from
      # -1 to its end (0.0070), times the 256-block scale.
      scale = np.repeat(np.asarray(q.absmax_scale), 256)[:len(absmax)]
      assert np.all(absmax_err <= 0.00704 * scale * (1 + 1e-6))
      assert np.max(absmax_err / absmax) < 0.01
    else:
      assert np.all(absmax_err == 0)
    err = np.abs(got - w.reshape(-1, 64))
    assert np.all(err <= half_gap * absmax[:, None] * (1 + 1e-6) + absmax_err[:, None] + 1e-7)
    assert float(np.mean(err)) < 0.08  # N(0, 1) weights: ~0.073


# ------------------------------------------------------------------------------ JAX behaviour


def test_pytree_and_jit():
  w = weights((96, 80), seed=2)
  q = nf4.quantize_nf4(w)
  leaves, treedef = jax.tree.flatten(q)
  assert [x.dtype for x in leaves] == [jnp.uint8, jnp.uint8, jnp.float32, jnp.float32]
  q2 = jax.tree.unflatten(treedef, leaves)
  assert (q2.shape, q2.dtype, q2.block_size, q2.dq_block_size) == ((96, 80), "float32", 64, 256)
  eager = nf4.dequantize_nf4(q)
  np.testing.assert_array_equal(np.asarray(jax.jit(nf4.dequantize_nf4)(q)), np.asarray(eager))
  x = jnp.ones((3, 96))
  y = jax.jit(lambda x, q: x @ nf4.dequantize_nf4(q))(x, q)
  np.testing.assert_allclose(np.asarray(y), np.asarray(x @ eager), rtol=1e-6, atol=1e-6)
  qj = jax.jit(nf4.quantize_nf4)(w)
  np.testing.assert_array_equal(np.asarray(qj.packed), np.asarray(q.packed))
  np.testing.assert_array_equal(np.asarray(qj.absmax), np.asarray(q.absmax))


def test_bad_arguments():
  with pytest.raises(ValueError, match="block_size"):
    nf4.quantize_nf4(np.ones(10, np.float32), block_size=63)
  with pytest.raises(TypeError, match="floating"):
    nf4.quantize_nf4(np.ones(10, np.int32))


def test_storage_4096x4096_is_4127_bits_per_param():
  w = np.random.default_rng(1).standard_normal((4096, 4096), dtype=np.float32)
  q = nf4.quantize_nf4(w)
  n = 4096 * 4096
  expected = n // 2 + n // 64 + 4 * (n // 64 // 256) + 4  # codes, 8-bit absmax, scales, offset
  assert nf4.nbytes(q) == expected == 8_654_852
  assert nf4.bits_per_param(q) == pytest.approx(4.127, abs=5e-4)
  assert nf4.bits_per_param(jax.eval_shape(nf4.quantize_nf4, w)) == nf4.bits_per_param(q)
  assert nf4.bits_per_param(nf4.quantize_nf4(w[:1024], double_quant=False)) == 4.5


# ------------------------------------------------------------------------------ bitsandbytes


@pytest.mark.torch
def test_matches_bitsandbytes():
  """Direct comparison with bitsandbytes where it (and torch) is installed; CPU build.

  bitsandbytes' CPU path departs from its CUDA kernels, which the module follows, in two places,
  compared loosely here: an all-zero block gets code 7 instead of 0 (both dequantize to 0), and
  its C++ 8-bit search does not always return the nearest code, so a few absmax codes differ.
  """
  torch = pytest.importorskip("torch")
  bnb_f = pytest.importorskip("bitsandbytes.functional")
  np.testing.assert_array_equal(bnb_f.create_dynamic_map().numpy(), nf4.DYNAMIC_CODE)
  np.testing.assert_array_equal(bnb_f.get_4bit_type("nf4", device="cpu").numpy(), nf4.NF4_CODE)
  for shape in [(96, 130), (1001,), (3, 5, 7)]:
    w = weights(shape, seed=sum(shape))
    packed, state = bnb_f.quantize_4bit(torch.from_numpy(w), blocksize=64,
                                        compress_statistics=True, quant_type="nf4")
    q = nf4.quantize_nf4(w)
    np.testing.assert_array_equal(np.asarray(q.packed), packed.numpy().reshape(-1))
    assert float(q.absmax_offset) == pytest.approx(float(state.offset), rel=1e-6)
    assert np.mean(np.asarray(q.absmax) != state.absmax.numpy()) < 0.01
    theirs_dq = bnb_f.dequantize_4bit(packed, state).numpy()
    # Our dequantization of bitsandbytes' own quantized state is bit-exact ...
    theirs = nf4.NF4Tensor(
        packed=jnp.asarray(packed.numpy().reshape(-1)), absmax=jnp.asarray(state.absmax.numpy()),
        absmax_scale=jnp.asarray(state.state2.absmax.numpy()),
        absmax_offset=jnp.asarray(state.offset.numpy()), shape=shape, dtype="float32")
    np.testing.assert_array_equal(np.asarray(nf4.dequantize_nf4(theirs)), theirs_dq)
    # ... and our own quantization dequantizes to within one 8-bit absmax step of theirs.
    ours_dq = np.asarray(nf4.dequantize_nf4(q))
    np.testing.assert_allclose(ours_dq, theirs_dq, rtol=0, atol=0.015 * np.abs(w).max())
  w = weights((4, 64), seed=1)
  w[2] = 0.0
  packed, state = bnb_f.quantize_4bit(torch.from_numpy(w), blocksize=64, quant_type="nf4")
  q = nf4.quantize_nf4(w, double_quant=False)
  theirs = packed.numpy().reshape(-1)
  np.testing.assert_array_equal(np.asarray(q.packed)[:64], theirs[:64])
  assert np.all(theirs[64:96] == 0x77) and np.all(np.asarray(q.packed)[64:96] == 0)
  np.testing.assert_array_equal(np.asarray(nf4.dequantize_nf4(q)),
                                bnb_f.dequantize_4bit(packed, state).numpy())
