"""Merged adapters as plain float weights, and a merged teacher as a Hugging Face folder.

    export_merged_teacher(out_dir, config, base, adapters, tokenizer)
    # -> transformers.Wav2Vec2ForCTC.from_pretrained(out_dir) runs the adapted teacher

The base may be float or NF4-quantized (QLoRA): every kernel is written as
dequant(W) + (alpha / r) A B in float32 (`lora.merge_lora`), through the converter's own
`export_hf_folder`, so the folder passes the same strict key and shape checks as any export.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from distill_jax import text
from distill_jax.adapters import checkpoint as adapter_ckpt
from distill_jax.adapters.lora import merge_lora, quantize_base
from distill_jax.adapters.tree import PyTree
from distill_jax.convert import hf_wav2vec2
from distill_jax.models.wav2vec2 import Wav2Vec2Config


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


def export_merged_teacher(out_dir: str, config: Wav2Vec2Config, base_params: PyTree,
                          adapters: PyTree, tokenizer: text.CharTokenizer, **export_kwargs) -> str:
  """Writes the adapted wav2vec2 teacher as a transformers folder; returns `out_dir`.

  Args:
    out_dir: the folder to write (config.json, model.safetensors, vocab, processor configs).
    config: the teacher's architecture.
    base_params: the teacher's params (float or with NF4 kernels).
    adapters: LoRA adapters of it (`init_lora` / `load_adapters`).
    tokenizer: the teacher's character tokenizer.
    **export_kwargs: passed to `hf_wav2vec2.export_hf_folder` (e.g. weight_norm_naming).
  """
  return hf_wav2vec2.export_hf_folder(config, merged_params(base_params, adapters), tokenizer,
                                      out_dir, **export_kwargs)
