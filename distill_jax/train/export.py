"""Trained and adapted models exported as Hugging Face folders.

    export_checkpoint("runs/teacher", "avg:5", "teachers/demo_hf")
    export_merged_teacher(out_dir, config, base, adapters, tokenizer)
    # -> transformers.Wav2Vec2ForCTC.from_pretrained(out_dir) runs the adapted teacher

The run's saved config says what it trained (`config.model.encoder='wav2vec2'`, e.g.
configs/demo_teacher.py); the folder is then a teacher like any hub checkpoint.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
from flax import traverse_util

from distill_jax import text
from distill_jax.adapters import merge
from distill_jax.adapters.tree import PyTree
from distill_jax.convert import hf_wav2vec2, whisper_ctc_folder
from distill_jax.models.wav2vec2 import Wav2Vec2Config
from distill_jax.models import build
from distill_jax.train import runs

EXPORT_META = "exported_from.json"


def export_checkpoint(workdir: str, which: str | int, out_dir: str, **head_kwargs) -> dict:
  """A wav2vec2 model trained by the loop (`config.model.encoder='wav2vec2'`, e.g.
  configs/demo_teacher.py) -> a transformers folder (`export_hf_folder`), plus
  `exported_from.json` (workdir, step, config name, parameter count, weights sha256).

  Args:
    workdir: the run folder (its saved config says what it trained).
    which: checkpoint, 'best', 'latest' or a step.
    out_dir: output folder; must not hold weights already.
    **head_kwargs: for a Whisper CTC head, passed to `whisper_ctc_folder.save_folder` (e.g.
      weights_dtype='float16'); an error for a wav2vec2 model.

  Returns:
    The metadata written to `exported_from.json`.
  """
  config = runs.saved_config(workdir)
  if config.model.encoder == build.WHISPER_CTC:
    return export_whisper_head(workdir, which, out_dir, **head_kwargs)
  if head_kwargs:
    raise ValueError(f"{workdir}: {sorted(head_kwargs)} apply to a Whisper CTC head only")
  if config.model.encoder != build.WAV2VEC2:
    raise ValueError(f"config.model.encoder={config.model.encoder!r}: only a wav2vec2 model "
                     f"(encoder='{build.WAV2VEC2}') or a Whisper CTC head "
                     f"('{build.WHISPER_CTC}') exports to a teacher folder")
  for name in (hf_wav2vec2.SAFETENSORS, hf_wav2vec2.PYTORCH_BIN):
    if os.path.exists(os.path.join(out_dir, name)):
      raise FileExistsError(f"{os.path.join(out_dir, name)} exists; choose an empty --out")
  model, params, tokenizer, step = runs.restore_student(workdir, which)
  params = jax.device_get(params)
  hf_wav2vec2.export_hf_folder(model.config, params, tokenizer, out_dir)
  meta = {
      "workdir": os.path.abspath(workdir),
      "checkpoint": str(which),
      "step": int(step),
      "config_name": config.get("name", ""),
      "num_params": int(sum(np.size(v) for v in jax.tree.leaves(params))),
      "weights_sha256": hf_wav2vec2.weights_sha256(out_dir),
  }
  with open(os.path.join(out_dir, EXPORT_META), "w", encoding="utf-8") as f:
    json.dump(meta, f, indent=2, sort_keys=True)
  return meta


def export_whisper_head(workdir: str, which: str | int, out_dir: str, **save_kwargs) -> dict:
  """A Whisper CTC head trained by the loop (`config.model.encoder='whisper_ctc'`, e.g.
  configs/whisper_head.py) -> a Whisper teacher folder (`convert/whisper_ctc_folder.py`): the
  head's params, pointing at the Whisper folder the run started from (`config.train.init_from`).
  """
  config = runs.saved_config(workdir)
  whisper_folder = config.train.init_from
  if not whisper_folder or not os.path.isfile(os.path.join(whisper_folder, "config.json")):
    raise ValueError(f"{workdir}: config.train.init_from={whisper_folder!r} is not the Whisper "
                     "Hugging Face folder the head was trained on")
  model, params, tokenizer, step = runs.restore_student(workdir, which)
  meta = whisper_ctc_folder.save_folder(out_dir, model, params, tokenizer.vocab, whisper_folder,
                                        **save_kwargs)
  stored = [v for k, v in traverse_util.flatten_dict(params, sep="/").items()
            if whisper_ctc_folder.is_stored(model, k)]
  meta.update(workdir=os.path.abspath(workdir), checkpoint=str(which), step=int(step),
              config_name=config.get("name", ""),
              num_stored_params=int(sum(np.size(v) for v in stored)))
  with open(os.path.join(out_dir, EXPORT_META), "w", encoding="utf-8") as f:
    json.dump({k: v for k, v in meta.items() if k != "vocab"}, f, indent=2, sort_keys=True)
  return meta


def export_merged_teacher(out_dir: str, config: Wav2Vec2Config, base_params: PyTree,
                          adapters: PyTree, tokenizer: text.CharTokenizer, **export_kwargs) -> str:
  """Writes the adapted wav2vec2 teacher as a transformers folder; returns `out_dir`.

  Every kernel is dequant(W) + (alpha / r) A B in float32, written through the converter's own
  `export_hf_folder`, so the folder passes the same strict key and shape checks as any export.

  Args:
    out_dir: the folder to write (config.json, model.safetensors, vocab, processor configs).
    config: the teacher's architecture.
    base_params: the teacher's params (float or with NF4 kernels).
    adapters: LoRA adapters of it (`init_lora` / `load_adapters`).
    tokenizer: the teacher's character tokenizer.
    **export_kwargs: passed to `hf_wav2vec2.export_hf_folder` (e.g. weight_norm_naming).
  """
  return hf_wav2vec2.export_hf_folder(config, merge.merged_params(base_params, adapters), tokenizer,
                                      out_dir, **export_kwargs)
