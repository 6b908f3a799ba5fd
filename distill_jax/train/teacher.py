"""The frozen teacher of a distillation run, from `config.distill`.

`load_teacher(config, tokenizer)` restores a converted teacher (`launch/convert_teacher.py`
output; a Hugging Face folder works too and is converted in memory), checks that its vocabulary
is the student's (the KL term compares posteriors id by id), fingerprints its params (recorded
in checkpoints: resuming with another teacher is an error), and opens the offline cache when
`config.distill.cache` is set. `kd_spec` turns the config into the step's `KdSpec`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import ml_collections

from distill_jax import text as text_lib
from distill_jax.adapters import export as adapter_export
from distill_jax.convert import hf_wav2vec2
from distill_jax.data import teacher_cache
from distill_jax.losses import distill as kd
from distill_jax.models import wav2vec2 as w2v
from distill_jax.train import steps


@dataclasses.dataclass
class Teacher:
  path: str
  config: w2v.Wav2Vec2Config
  params: Any
  fingerprint: str
  layers: tuple[int, ...]
  fn: steps.TeacherFn
  cache: teacher_cache.TeacherCache | None = None


def student_layers(config: ml_collections.ConfigDict) -> int:
  return int(config.model[config.model.encoder].num_layers)


def layer_pairs(config: ml_collections.ConfigDict,
                teacher_config: w2v.Wav2Vec2Config) -> tuple[tuple[int, int], ...]:
  d = config.distill
  if not d.gamma:
    return ()
  pairs = [tuple(p) for p in d.layer_pairs] if d.layer_mapping == "explicit" else None
  return kd.layer_mapping(d.layer_mapping, student_layers(config),
                          teacher_config.num_hidden_layers, k=d.layer_k or None, pairs=pairs)


def frame_ratio(config: ml_collections.ConfigDict, teacher_config: w2v.Wav2Vec2Config) -> int:
  """Teacher frames per student frame: `config.distill.frame_ratio`, or (0) from the hops."""
  if config.distill.frame_ratio:
    return int(config.distill.frame_ratio)
  frontend = config.model.frontend
  student_hop = (round(frontend.sample_rate * frontend.hop_ms / 1000)
                 * config.model[config.model.encoder].subsampling)
  teacher_hop = math.prod(teacher_config.conv_stride)
  if student_hop % teacher_hop:
    raise ValueError(
        f"mismatched frame rates without an alignment rule: student frames every {student_hop} "
        f"samples, teacher frames every {teacher_hop}; the ratio must be a whole number (set "
        "config.distill.frame_ratio only if you know the frames line up)")
  return student_hop // teacher_hop


def kd_spec(config: ml_collections.ConfigDict, teacher: Teacher) -> steps.KdSpec:
  d = config.distill
  pairs = layer_pairs(config, teacher.config)
  return steps.KdSpec(alpha=d.alpha, beta=d.beta, gamma=d.gamma, temperature=d.temperature,
                      blank_weight=d.blank_weight, blank_threshold=d.blank_threshold,
                      frame_ratio=frame_ratio(config, teacher.config),
                      hard_labels=d.hard_labels, layer_pairs=pairs, hidden_loss=d.hidden_loss,
                      teacher_dim=teacher.config.hidden_size if pairs else 0)


def load_teacher(config: ml_collections.ConfigDict,
                 tokenizer: text_lib.CharTokenizer) -> Teacher:
  """Restores `config.distill.teacher` and checks it against the student's tokenizer."""
  path = config.distill.teacher
  if not path or not os.path.isdir(path):
    raise FileNotFoundError(f"config.distill.teacher={path!r} is not a folder (a converted "
                            "teacher from launch.convert_teacher, or a Hugging Face folder)")
  if os.path.exists(os.path.join(path, "teacher.json")):
    t_config, params, t_tok, _ = hf_wav2vec2.load_teacher(path)
  else:
    t_config, params, t_tok = hf_wav2vec2.load_hf_folder(path)
  if config.distill.teacher_adapter:  # an adapted teacher (launch/adapt.py)
    params = adapter_export.merge_saved_adapters(params, config.distill.teacher_adapter)
  try:
    kd.check_vocab_match(tokenizer.vocab, t_tok.vocab)
  except ValueError as e:
    raise ValueError(f"teacher {path}: {e}") from e
  layers = tuple(t for _, t in layer_pairs(config, t_config))
  teacher = Teacher(path=path, config=t_config, params=params,
                    fingerprint=teacher_cache.params_fingerprint(params), layers=layers,
                    fn=w2v.make_teacher_fn(w2v.Wav2Vec2ForCTC(t_config), layers))
  if config.distill.cache:
    teacher.cache = teacher_cache.open_cache(config.distill.cache, teacher.fingerprint,
                                             layers=layers, vocab=tokenizer.vocab,
                                             config=t_config)
  return teacher
