"""The JAX-free on-device runtime: numpy + onnxruntime + soundfile only.

Nothing here imports jax, flax or another distill_jax package (tests/ondevice runs it in a
process where `import jax` fails). Read an exported folder (`distill_jax/export`) with
`model.OnDeviceModel.load(folder)`, transcribe with `transcribe.Transcriber`.
"""
