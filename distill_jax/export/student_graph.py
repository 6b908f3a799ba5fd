"""A whole-utterance CTC student as an ONNX graph, written op by op from its Flax params.

    features [N, T, F] (normalized log-mel, every row a whole utterance: no paddings)
      -> log_probs [N, T', V] (log-softmax over the vocabulary) and logits [N, T', V]

The graph mirrors `models/encoders.py` and `models/layers.py` for the Conformer and
Transformer encoders (any positions, causal or not, unrolled or scanned layers) and the CTC head
(`models/heads/ctc.py`). Frame masks are identities without paddings and are left out. Op
mapping (opset 17, float32; ops onnxruntime has run since 1.14):

  ConvSubsampling   3x3 patches matmul per stage  -> Conv(stride 2, pads 1) + Relu, then the
                                                     [T', F' * C] projection (MatMul)
  Dense/DenseGeneral                              -> MatMul (+ Add)  (int8-quantizable)
  LayerNorm (eps 1e-6)                            -> LayerNormalization
  swish / GLU / gelu (tanh form)                  -> Sigmoid*Mul / two MatMuls / Tanh formula
  rotary positions                                -> q*cos + (q R)*sin with R folded into a
                                                     second query/key MatMul; angles from a
                                                     Range over T (any length)
  attention                                       -> MatMul, Div, [Where for causal], Softmax
  depthwise conv over time                        -> Conv(group=D) on [N, D, T]
  CTC head                                        -> MatMul + Add, LogSoftmax

The JAX reference is `export/reference.py`; tests/export checks parity within 1e-4.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import onnx
from onnx import TensorProto, helper

from distill_jax.export.onnx_graph import Graph
from distill_jax.models import encoders
from distill_jax.ondevice import contract

LN_EPS = 1e-6  # flax.linen.LayerNorm's default
OPSET = 17


def _np(tree: Any) -> Any:
  return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), tree)


def _rotate_columns(w: np.ndarray) -> np.ndarray:
  """Columns of w permuted and negated so that (x @ w') = rot(x @ w): out[2i] = -in[2i+1],
  out[2i+1] = in[2i] (the rotary pair rotation by 90 degrees)."""
  out = np.empty_like(w)
  out[..., 0::2] = -w[..., 1::2]
  out[..., 1::2] = w[..., 0::2]
  return out


class _StudentGraph:
  """Builds the graph; one method per Flax module."""

  def __init__(self, encoder, params: dict):
    self.enc = encoder
    self.p = _np(params)
    self.g = Graph()

  # --- generic layers ----------------------------------------------------------------------

  def dense(self, x: str, p: dict, name: str, kernel: np.ndarray | None = None,
            bias: np.ndarray | None = None) -> str:
    k = p["kernel"] if kernel is None else kernel
    b = p["bias"] if bias is None else bias
    k = k.reshape(k.shape[0], -1) if k.ndim > 2 and kernel is None else k
    y = self.g.op("MatMul", x, self.g.const(f"{name}.kernel", k), name=f"{name}.matmul")
    return self.g.op("Add", y, self.g.const(f"{name}.bias", b.reshape(-1)), name=f"{name}.add")

  def layer_norm(self, x: str, p: dict, name: str) -> str:
    return self.g.op("LayerNormalization", x, self.g.const(f"{name}.scale", p["scale"]),
                     self.g.const(f"{name}.bias", p["bias"]), axis=-1, epsilon=LN_EPS,
                     name=name)

  def swish(self, x: str, name: str) -> str:
    return self.g.op("Mul", x, self.g.op("Sigmoid", x, name=f"{name}.sigmoid"), name=name)

  def gelu(self, x: str, name: str) -> str:
    """x * 0.5 * (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (jax.nn.gelu, approximate)."""
    c = lambda n, v: self.g.const(f"{name}.{n}", np.asarray(v, np.float32))
    x3 = self.g.op("Mul", self.g.op("Mul", x, x), x)
    inner = self.g.op("Mul", c("sqrt_2_over_pi", np.sqrt(2 / np.pi)),
                      self.g.op("Add", x, self.g.op("Mul", c("k", 0.044715), x3)))
    cdf = self.g.op("Mul", c("half", 0.5), self.g.op("Add", c("one", 1.0),
                                                     self.g.op("Tanh", inner)))
    return self.g.op("Mul", x, cdf, name=name)

  def feed_forward(self, x: str, p: dict, name: str, act) -> str:
    h = act(self.dense(x, p["in"], f"{name}.in"), f"{name}.act")
    return self.dense(h, p["out"], f"{name}.out")

  # --- positions ---------------------------------------------------------------------------

  def positions(self, x: str) -> None:
    """pos [T] float and pos_col [T, 1] from x [N, T, D]."""
    g = self.g
    shape = g.op("Shape", x)
    t = g.op("Gather", shape, g.const("one_index", np.asarray(1, np.int64)), axis=0)
    tf = g.op("Cast", t, to=TensorProto.FLOAT)
    self.pos = g.op("Range", g.const("zero_f", np.asarray(0.0, np.float32)), tf,
                    g.const("one_f", np.asarray(1.0, np.float32)), name="positions")
    self.pos_col = g.op("Unsqueeze", self.pos, g.const("axis1", np.asarray([1], np.int64)))
    self.pos_row = g.op("Unsqueeze", self.pos, g.const("axis0", np.asarray([0], np.int64)))

  def rotary_tables(self, d: int, dh: int) -> None:
    """cos/sin [T, D] of angle t * base^(-2i/Dh) for every flattened (head, 2i + parity)."""
    inv = np.asarray(10000.0 ** (-jnp.arange(0, dh, 2, dtype=jnp.float32) / dh), np.float32)
    freq = np.tile(np.repeat(inv, 2), d // dh)                       # [D]
    angles = self.g.op("Mul", self.pos_col, self.g.const("rotary.freq", freq[None]))
    self.cos = self.g.op("Cos", angles, name="rotary.cos")
    self.sin = self.g.op("Sin", angles, name="rotary.sin")

  def sinusoidal(self, x: str, d: int) -> str:
    """x + `layers.sinusoidal_positions(T, D)`."""
    inv = np.asarray(jnp.exp(-math.log(10000.0) * jnp.arange(0, d, 2, dtype=jnp.float32) / d),
                     np.float32)
    freq = np.repeat(inv, 2)[:d]
    even = (np.arange(d) % 2 == 0).astype(np.float32)
    angles = self.g.op("Mul", self.pos_col, self.g.const("sinusoidal.freq", freq[None]))
    pe = self.g.op("Add",
                   self.g.op("Mul", self.g.op("Sin", angles), self.g.const("even", even[None])),
                   self.g.op("Mul", self.g.op("Cos", angles),
                             self.g.const("odd", 1.0 - even[None])), name="sinusoidal")
    return self.g.op("Add", x, pe)

  # --- blocks ------------------------------------------------------------------------------

  def attention(self, x: str, p: dict, name: str, rotary: bool, causal: bool) -> str:
    g, h = self.g, self.enc.num_heads
    d = p["query"]["kernel"].shape[0]
    dh = d // h

    def proj(which: str) -> str:
      k = p[which]["kernel"].reshape(d, d)
      b = p[which]["bias"].reshape(d)
      y = self.dense(x, p[which], f"{name}.{which}", k, b)
      if rotary and which != "value":
        y_rot = self.dense(x, p[which], f"{name}.{which}_rot", _rotate_columns(k),
                           _rotate_columns(b))
        y = g.op("Add", g.op("Mul", y, self.cos), g.op("Mul", y_rot, self.sin),
                 name=f"{name}.{which}_rotary")
      return g.op("Reshape", y, g.const("heads_shape", np.asarray([0, 0, h, dh], np.int64)))

    q = g.op("Transpose", proj("query"), perm=[0, 2, 1, 3])        # [N, H, T, Dh]
    k = g.op("Transpose", proj("key"), perm=[0, 2, 3, 1])          # [N, H, Dh, T]
    v = g.op("Transpose", proj("value"), perm=[0, 2, 1, 3])        # [N, H, T, Dh]
    logits = g.op("Div", g.op("MatMul", q, k),
                  g.const(f"{name}.scale", np.asarray(math.sqrt(dh), np.float32)))
    if causal:
      mask = g.op("GreaterOrEqual", self.pos_col, self.pos_row, name=f"{name}.causal")
      logits = g.op("Where", mask, logits,
                    g.const("float_min", np.asarray(np.finfo(np.float32).min, np.float32)))
    probs = g.op("Softmax", logits, axis=-1, name=f"{name}.softmax")
    ctx = g.op("Transpose", g.op("MatMul", probs, v), perm=[0, 2, 1, 3])
    ctx = g.op("Reshape", ctx, g.const("merge_shape", np.asarray([0, 0, d], np.int64)))
    return self.dense(ctx, p["out"], f"{name}.out", p["out"]["kernel"].reshape(d, d))

  def conv_module(self, x: str, p: dict, name: str) -> str:
    g = self.g
    d = p["pointwise_in"]["kernel"].shape[0]
    h = self.layer_norm(x, p["ln"], f"{name}.ln")
    w, b = p["pointwise_in"]["kernel"], p["pointwise_in"]["bias"]
    a = self.dense(h, p, f"{name}.pointwise_in_a", w[:, :d], b[:d])
    gate = self.dense(h, p, f"{name}.pointwise_in_gate", w[:, d:], b[d:])
    h = g.op("Mul", a, g.op("Sigmoid", gate), name=f"{name}.glu")
    kern = p["depthwise"]["kernel"]                                  # [K, D]
    k = kern.shape[0]
    left = k - 1 if self.enc.causal else (k - 1) // 2
    h = g.op("Transpose", h, perm=[0, 2, 1])                         # [N, D, T]
    h = g.op("Conv", h, g.const(f"{name}.depthwise.kernel", kern.T[:, None, :]),
             g.const(f"{name}.depthwise.bias", p["depthwise"]["bias"]), group=d,
             kernel_shape=[k], pads=[left, k - 1 - left], name=f"{name}.depthwise")
    h = g.op("Transpose", h, perm=[0, 2, 1])
    h = self.swish(self.layer_norm(h, p["ln_conv"], f"{name}.ln_conv"), f"{name}.swish")
    return self.dense(h, p["pointwise_out"], f"{name}.pointwise_out")

  def conformer_block(self, x: str, p: dict, name: str) -> str:
    g, half = self.g, self.g.const("half", np.asarray(0.5, np.float32))
    rotary = self.enc.positions == "rotary"
    if self.enc.positions not in ("rotary", "none"):
      raise ValueError(f"conformer positions={self.enc.positions!r}: not exportable")
    ff = lambda x, which: self.feed_forward(
        self.layer_norm(x, p[f"ln_{which}"], f"{name}.ln_{which}"), p[which],
        f"{name}.{which}", self.swish)
    x = g.op("Add", x, g.op("Mul", half, ff(x, "ff1")))
    x = g.op("Add", x, self.attention(self.layer_norm(x, p["ln_att"], f"{name}.ln_att"),
                                      p["attention"], f"{name}.attention", rotary,
                                      self.enc.causal))
    x = g.op("Add", x, self.conv_module(x, p["conv"], f"{name}.conv"))
    x = g.op("Add", x, g.op("Mul", half, ff(x, "ff2")))
    return self.layer_norm(x, p["ln_out"], f"{name}.ln_out")

  def transformer_block(self, x: str, p: dict, name: str) -> str:
    g = self.g
    x = g.op("Add", x, self.attention(self.layer_norm(x, p["ln_att"], f"{name}.ln_att"),
                                      p["attention"], f"{name}.attention",
                                      self.enc.positions == "rotary", self.enc.causal))
    return g.op("Add", x, self.feed_forward(self.layer_norm(x, p["ln_ff"], f"{name}.ln_ff"),
                                            p["ff"], f"{name}.ff", self.gelu))

  def subsampling(self, x: str, p: dict) -> str:
    g = self.g
    n = int(math.log2(self.enc.subsampling))
    h = g.op("Unsqueeze", x, g.const("axis1", np.asarray([1], np.int64)))  # [N, 1, T, F]
    for i in range(n):
      k = p[f"conv{i}"]["kernel"]                                    # [9 Cin, Cout]
      cout = k.shape[1]
      w = k.reshape(3, 3, -1, cout).transpose(3, 2, 0, 1)             # [Cout, Cin, 3, 3]
      h = g.op("Conv", h, g.const(f"subsampling.conv{i}.kernel", w),
               g.const(f"subsampling.conv{i}.bias", p[f"conv{i}"]["bias"]),
               kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
               name=f"subsampling.conv{i}")
      h = g.op("Relu", h)
    h = g.op("Transpose", h, perm=[0, 2, 3, 1])                     # [N, T', F', C]
    h = g.op("Reshape", h, g.const("flatten_shape", np.asarray([0, 0, -1], np.int64)))
    return self.dense(h, p["proj"], "subsampling.proj")

  # --- whole model -------------------------------------------------------------------------

  def block_params(self, i: int) -> dict:
    enc = self.p["encoder"]
    if "blocks" in enc:  # scan_layers=True: params stacked on a leading [L] axis
      return jax.tree_util.tree_map(lambda a: a[i], enc["blocks"]["layer"])
    return enc[f"block{i}"]

  def build(self) -> tuple[str, str]:
    enc, p = self.enc, self.p["encoder"]
    x = self.subsampling(contract.INPUT, p["subsampling"])
    self.positions(x)
    d = p["subsampling"]["proj"]["kernel"].shape[1]
    if enc.positions == "rotary":
      self.rotary_tables(d, d // enc.num_heads)
    if isinstance(enc, encoders.ConformerEncoder):
      for i in range(enc.num_layers):
        x = self.conformer_block(x, self.block_params(i), f"block{i}")
    else:
      if enc.positions == "sinusoidal":
        x = self.sinusoidal(x, d)
      elif enc.positions not in ("rotary", "none"):
        raise ValueError(f"transformer positions={enc.positions!r}: not exportable")
      for i in range(enc.num_layers):
        x = self.transformer_block(x, self.block_params(i), f"block{i}")
      x = self.layer_norm(x, p["ln_out"], "ln_out")
    head = self.p["ctc_head"]["logits"]
    logits = self.g.op("MatMul", x, self.g.const("ctc_head.kernel", head["kernel"]),
                       name="ctc_head.matmul")
    logits = self.g.op("Add", logits, self.g.const("ctc_head.bias", head["bias"]),
                       name=contract.LOGITS_OUTPUT)
    log_probs = self.g.op("LogSoftmax", logits, axis=-1, name=contract.OUTPUT)
    return log_probs, logits


def check_exportable(model) -> None:
  """Raises naming the part of a student this exporter does not cover."""
  from distill_jax.models import student  # the students' module (imports jax, flax)
  if not isinstance(model, student.CtcStudent):
    raise ValueError(f"only CTC students export to the whole-utterance ONNX model, got "
                     f"{type(model).__name__}")
  if not isinstance(model.encoder, (encoders.ConformerEncoder, encoders.TransformerEncoder)):
    raise ValueError(f"encoder {type(model.encoder).__name__} is not exportable yet (Conformer "
                     "and Transformer encoders are)")
  if model.encoder.subsampling not in (1, 2, 4, 8):
    raise ValueError(f"subsampling={model.encoder.subsampling} is not 1, 2, 4 or 8")


def build_onnx(model, params: dict, metadata: dict[str, Any]) -> onnx.ModelProto:
  """A CTC student (`models/student.py::CtcStudent`) and its params -> ONNX model with
  `metadata` (contract keys) in its metadata_props."""
  check_exportable(model)
  sg = _StudentGraph(model.encoder, params)
  log_probs, logits = sg.build()
  f, v = model.frontend.num_mels, model.vocab_size
  inputs = [helper.make_tensor_value_info(contract.INPUT, TensorProto.FLOAT, ["N", "T", f])]
  outputs = [helper.make_tensor_value_info(log_probs, TensorProto.FLOAT, ["N", "T_out", v]),
             helper.make_tensor_value_info(logits, TensorProto.FLOAT, ["N", "T_out", v])]
  return sg.g.model(inputs, outputs, opset=OPSET, metadata=contract.encode_props(metadata),
                    graph_name="distill_jax_ctc_student")
