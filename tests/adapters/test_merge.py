"""A merged teacher exported as a Hugging Face folder loads in transformers and matches Flax.

Tolerance: 1e-4 absolute on float32 logits at valid frames (as tests/convert), between
transformers on the exported folder and the merged Flax model.
"""

import jax
import numpy as np
import pytest

from distill_jax import text
from distill_jax.adapters import lora, merge
from distill_jax.train import export

ATOL = 1e-4


@pytest.mark.torch
@pytest.mark.parametrize("quantized", [pytest.param(False, marks=pytest.mark.slow), True],
                         ids=["lora", "qlora"])  # QLoRA (default run) = LoRA + NF4
def test_exported_merged_teacher_matches_flax(tiny_teacher, perturb, tmp_path, quantized):
  torch = pytest.importorskip("torch", reason="needs torch (requirements-reference.txt)")
  transformers = pytest.importorskip("transformers", reason="needs transformers")
  t = tiny_teacher
  base = lora.quantize_base(t.params, t.patterns) if quantized else t.params
  adapters = perturb(lora.init_lora(t.params, t.patterns, 4, 8.0, jax.random.key(0)), 1)
  out = export.export_merged_teacher(str(tmp_path / "hf"), t.config, base, adapters,
                                     text.CharTokenizer())
  model = transformers.Wav2Vec2ForCTC.from_pretrained(out).eval()
  transformers.Wav2Vec2Processor.from_pretrained(out)  # the folder is complete
  wave, pad = np.asarray(t.wave), np.asarray(t.pad)
  with torch.inference_mode():
    ref = model(torch.tensor(wave), attention_mask=torch.tensor((1 - pad).astype(np.int64)))
  merged = t.run_base(merge.merged_params(base, adapters))
  valid = np.asarray(t.model.apply({"params": t.params}, wave, pad)["frame_paddings"]) < 0.5
  diff = np.abs(ref.logits.numpy() - np.asarray(merged))[valid]
  assert float(diff.max()) < ATOL
  unmerged = t.run(base, adapters)
  assert float(np.abs(np.asarray(unmerged) - ref.logits.numpy())[valid].max()) < ATOL
  assert float(np.abs(np.asarray(unmerged) - np.asarray(t.run_base(t.params)))[valid].max()) > 1e-3
