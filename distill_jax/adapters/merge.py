"""Merged adapters as plain float weights: what an adapted model computes, in one tree.

The base may be float or NF4-quantized (QLoRA): every adapted kernel becomes
dequant(W) + (alpha / r) A B in float32 (`lora.merge_lora`). `train/export.py` writes such a
tree as a Hugging Face folder.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from distill_jax.adapters import checkpoint as adapter_ckpt
from distill_jax.adapters.lora import merge_lora, quantize_base
from distill_jax.adapters.tree import PyTree


def merged_params(base_params: PyTree, adapters: PyTree) -> dict[str, Any]:
  """dequant(W) + s A B for every adapted kernel, all NF4 kernels dequantized; numpy float32."""
  merged = jax.jit(merge_lora)(base_params, adapters)
  return jax.tree.map(np.asarray, jax.device_get(merged))


def merge_saved_adapters(float_params: PyTree, adapter_path: str) -> dict[str, Any]:
  """A model's float params with the adapters saved at `adapter_path` merged in.

  A QLoRA run (its metadata lists the `quantize` patterns) trained on the NF4 base, so the base
  is quantized the same way first: dequant(nf4(W)) + s A B, what the adapted model computed.
  The base's fingerprint is checked (an adapter of another model is an error naming both).
  """
  quantize = adapter_ckpt.load_adapters(adapter_path, None).metadata.get("quantize") or []
  base = quantize_base(float_params, quantize) if quantize else float_params
  return merged_params(base, adapter_ckpt.load_adapters(adapter_path, base).adapters)
