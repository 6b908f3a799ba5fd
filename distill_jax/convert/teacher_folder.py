"""A teacher folder of any supported family, read into the one interface (`models/teacher.py`).

    teacher, tokenizer = load_folder("teachers/demo_hf")

A folder is a converted teacher (`launch.convert_teacher` output: Orbax params + configs), a
Whisper CTC-head folder (`convert/whisper_ctc_folder.py`) or a Hugging Face folder (converted
in memory), told apart by its files; a Hugging Face folder's
`model_type` picks the family in `FAMILIES`. A new family adds its loader there: the trainer,
the cache and evaluation only see the `Teacher` interface.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import jax.numpy as jnp

from distill_jax import text as text_lib
from distill_jax.convert import hf_wav2vec2, whisper_ctc_folder
from distill_jax.models import teacher as teacher_lib
from distill_jax.models.wav2vec2_teacher import Wav2Vec2Teacher


def _wav2vec2_hf(path: str, dtype: Any):
  config, params, tokenizer = hf_wav2vec2.load_hf_folder(path)
  return Wav2Vec2Teacher(config, params, tokenizer.vocab, dtype), tokenizer


# Hugging Face model_type -> loader(path, compute dtype) -> (teacher, tokenizer).
FAMILIES: dict[str, Callable[..., tuple[teacher_lib.Teacher, text_lib.CharTokenizer]]] = {
    "wav2vec2": _wav2vec2_hf,
}


def load_folder(path: str,
                dtype: Any = jnp.float32) -> tuple[teacher_lib.Teacher, text_lib.CharTokenizer]:
  """(teacher, its tokenizer) from a converted teacher folder or a Hugging Face folder."""
  if not path or not os.path.isdir(path):
    raise FileNotFoundError(f"teacher {path!r} is not a folder (a converted teacher from "
                            "launch.convert_teacher, or a Hugging Face folder)")
  if whisper_ctc_folder.is_folder(path):  # a Whisper encoder + a trained CTC head
    return whisper_ctc_folder.load_folder(path, dtype)
  if os.path.exists(os.path.join(path, hf_wav2vec2.TEACHER_META)):  # converted (wav2vec2)
    config, params, tokenizer, _ = hf_wav2vec2.load_teacher(path)
    return Wav2Vec2Teacher(config, params, tokenizer.vocab, dtype), tokenizer
  if not os.path.exists(os.path.join(path, "config.json")):
    raise FileNotFoundError(f"{path}: neither a converted teacher ({hf_wav2vec2.TEACHER_META}) "
                            "nor a Hugging Face folder (config.json)")
  with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
    model_type = json.load(f).get("model_type")
  if model_type == "whisper":
    raise ValueError(f"{path} is a Whisper folder: a teacher needs frame posteriors over the "
                     "student's characters, i.e. a CTC head on its encoder. Train one with "
                     "`python -m launch.train --config=configs/whisper_head.py` and export it "
                     "(launch.export_teacher); its folder is the teacher")
  if model_type not in FAMILIES:
    raise ValueError(f"{path}/config.json: model_type={model_type!r}; teachers of this family "
                     f"are not supported (supported: {sorted(FAMILIES)})")
  return FAMILIES[model_type](path, dtype)
