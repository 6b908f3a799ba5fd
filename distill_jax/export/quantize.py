"""int8 weights for an exported model with onnxruntime's dynamic quantizer.

`quantize_int8(src, dst)`: `quantize_dynamic` with per-channel (per output column) int8 weight
scales on MatMul only, the recipe icefall/sherpa-onnx ship (ANCHORS A2), with per-channel scales
as Moonshine found necessary (A3). Activations are quantized per call (dynamic), so no
calibration data is needed. Convolutions (the subsampling front and the depthwise convs, a small
share of the weights) stay float: the anchors' lesson is to keep the first conv in float.
"""

from __future__ import annotations

import os

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

OP_TYPES = ("MatMul",)


def quantize_int8(src: str, dst: str, op_types: tuple[str, ...] = OP_TYPES,
                  per_channel: bool = True) -> None:
  """Writes the int8 version of the ONNX model `src` to `dst`, metadata kept."""
  quantize_dynamic(src, dst, op_types_to_quantize=list(op_types), per_channel=per_channel,
                   weight_type=QuantType.QInt8)
  # The quantizer rewrites the model; make sure the metadata survived.
  a, b = onnx.load(src, load_external_data=False), onnx.load(dst, load_external_data=False)
  want = {p.key: p.value for p in a.metadata_props}
  have = {p.key: p.value for p in b.metadata_props}
  if want != have:
    onnx.helper.set_model_props(b, want)
    tmp = dst + ".tmp"
    onnx.save(b, tmp)
    os.replace(tmp, dst)
