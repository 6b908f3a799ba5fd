"""A minimal ONNX graph builder over the `onnx` helper API (nodes, initializers, names).

    g = Graph()
    y = g.op("MatMul", x, g.const("w", w))
    model = g.model(inputs, outputs, opset=17, metadata={...})
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

# ONNX IR version written: 8 is what onnxruntime >= 1.14 reads (the opset-17 generation).
IR_VERSION = 8


class Graph:
  """Collects nodes and initializers; names are unique (a counter suffix when reused)."""

  def __init__(self):
    self.nodes: list[onnx.NodeProto] = []
    self.initializers: list[onnx.TensorProto] = []
    self._names: set[str] = set()

  def name(self, base: str) -> str:
    base = base.replace("/", ".")
    name, i = base, 0
    while name in self._names:
      i += 1
      name = f"{base}_{i}"
    self._names.add(name)
    return name

  def const(self, name: str, value) -> str:
    """An initializer from a numpy array (float arrays are stored as float32)."""
    arr = np.asarray(value)
    if arr.dtype.kind == "f":
      arr = arr.astype(np.float32)
    name = self.name(name)
    self.initializers.append(numpy_helper.from_array(arr, name))
    return name

  def op(self, op_type: str, *inputs: str, name: str | None = None, outputs: int = 1,
         **attrs):
    """Adds a node; returns its output name (or a list when `outputs` > 1)."""
    base = self.name(name or op_type)
    outs = [base if outputs == 1 else self.name(f"{base}_out{k}") for k in range(outputs)]
    self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=base, **attrs))
    return outs[0] if outputs == 1 else outs

  def model(self, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto], *,
            opset: int, metadata: dict[str, str], graph_name: str = "graph",
            producer: str = "distill_jax") -> onnx.ModelProto:
    graph = helper.make_graph(self.nodes, graph_name, inputs, outputs, self.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name=producer, ir_version=IR_VERSION)
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model, full_check=True)
    return model
