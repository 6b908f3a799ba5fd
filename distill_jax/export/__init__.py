"""Export of trained students to ONNX for the JAX-free runtime (`distill_jax/ondevice`).

onnx_graph: a small graph builder over the `onnx` helper API; student_graph: a CTC student's
Flax params -> ONNX graph (features -> log_probs); reference: the same function in JAX, for
parity; quantize: int8 weights with onnxruntime; folder: writes the on-device folder.
"""
