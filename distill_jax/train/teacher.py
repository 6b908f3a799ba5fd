"""The frozen teacher of a distillation run, from `config.distill`.

`convert.teacher_folder.load_folder(path)` reads a teacher folder of any supported family into
the one interface (`models/teacher.py`). `load_teacher(config, tokenizer)` adds what a run
needs: the vocabulary check against
the student's (the KL term compares posteriors id by id), the params fingerprint (recorded in
checkpoints: resuming with another teacher is an error), the hidden layers the config maps, and
the offline cache when `config.distill.cache` is set. `kd_spec` turns the config into the
step's `KdSpec`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import ml_collections

from distill_jax import text as text_lib
from distill_jax.adapters import merge as adapter_merge
from distill_jax.convert import teacher_folder
from distill_jax.data import pseudo_labels
from distill_jax.data import teacher_cache
from distill_jax.models import projection
from distill_jax.models import teacher as teacher_lib
from distill_jax.train import steps


@dataclasses.dataclass
class RunTeacher:
  """A run's teacher: the interface, the layers the config maps, and (optional) its cache."""
  path: str
  teacher: teacher_lib.Teacher
  fingerprint: str
  layers: tuple[int, ...]
  cache: teacher_cache.TeacherCache | None = None

  @property
  def params(self) -> Any:
    return self.teacher.params

  def forward(self, params: Any, waveform: jax.Array,
              paddings: jax.Array) -> teacher_lib.TeacherOutput:
    """The online teacher as the distillation step calls it (the run's layers)."""
    return self.teacher.forward(params, waveform, paddings, self.layers)


def student_layers(config: ml_collections.ConfigDict) -> int:
  return int(config.model[config.model.encoder].num_layers)


def layer_pairs(config: ml_collections.ConfigDict,
                teacher: teacher_lib.Teacher) -> tuple[tuple[int, int], ...]:
  d = config.distill
  if not d.gamma:
    return ()
  explicit = d.layer_mapping == "explicit"
  pairs = [tuple(p) for p in d.layer_pairs] if explicit else None
  # 'explicit' takes the pairs only (config.distill.layer_k keeps its default there).
  return projection.layer_mapping(d.layer_mapping, student_layers(config),
                                  teacher.num_hidden_states - 1,
                                  k=None if explicit else (d.layer_k or None), pairs=pairs)


def frame_ratio(config: ml_collections.ConfigDict, teacher: teacher_lib.Teacher) -> int:
  """Teacher frames per student frame: `config.distill.frame_ratio`, or (0) from the hops."""
  if config.distill.frame_ratio:
    return int(config.distill.frame_ratio)
  frontend = config.model.frontend
  student_hop = (round(frontend.sample_rate * frontend.hop_ms / 1000)
                 * config.model[config.model.encoder].subsampling)
  teacher_hop = teacher.frame_samples
  if student_hop % teacher_hop:
    raise ValueError(
        f"mismatched frame rates without an alignment rule: student frames every {student_hop} "
        f"samples, teacher frames every {teacher_hop}; the ratio must be a whole number (set "
        "config.distill.frame_ratio only if you know the frames line up)")
  return student_hop // teacher_hop


def kd_spec(config: ml_collections.ConfigDict, teacher: RunTeacher) -> steps.KdSpec:
  """The step's `KdSpec` from `config.distill`; with hard_labels='whisper', checks that
  `config.data.train` is a Whisper pseudo-labelled manifest (`data/pseudo_labels.py`)."""
  d = config.distill
  if d.hard_labels == "whisper":
    try:
      pseudo_labels.check_pseudo_labelled(config.data.train)
    except (OSError, ValueError) as e:
      raise ValueError(f"config.distill.hard_labels='whisper' trains on Whisper's transcripts, "
                       f"but config.data.train={config.data.train!r} is not a manifest made by "
                       f"launch.whisper_transcribe: {e}") from e
  pairs = layer_pairs(config, teacher.teacher)
  return steps.KdSpec(alpha=d.alpha, beta=d.beta, gamma=d.gamma, temperature=d.temperature,
                      blank_weight=d.blank_weight, blank_threshold=d.blank_threshold,
                      frame_ratio=frame_ratio(config, teacher.teacher),
                      hard_labels=d.hard_labels, layer_pairs=pairs, hidden_loss=d.hidden_loss,
                      teacher_dim=teacher.teacher.hidden_size if pairs else 0)


def load_teacher(config: ml_collections.ConfigDict,
                 tokenizer: text_lib.CharTokenizer) -> RunTeacher:
  """Restores `config.distill.teacher` and checks it against the student's tokenizer."""
  path = config.distill.teacher
  if not path or not os.path.isdir(path):
    raise FileNotFoundError(f"config.distill.teacher={path!r} is not a folder (a converted "
                            "teacher from launch.convert_teacher, or a Hugging Face folder)")
  teacher, t_tok = teacher_folder.load_folder(path)
  if config.distill.teacher_adapter:  # an adapted teacher (launch/adapt.py)
    teacher = teacher.with_params(adapter_merge.merge_saved_adapters(
        teacher.params, config.distill.teacher_adapter))
  try:
    teacher_lib.check_vocab_match(tokenizer.vocab, t_tok.vocab)
  except ValueError as e:
    raise ValueError(f"teacher {path}: {e}") from e
  layers = tuple(t for _, t in layer_pairs(config, teacher))
  run_teacher = RunTeacher(path=path, teacher=teacher,
                           fingerprint=teacher_lib.params_fingerprint(teacher.params),
                           layers=layers)
  if config.distill.cache:
    run_teacher.cache = teacher_cache.open_cache(
        config.distill.cache, run_teacher.fingerprint, layers=layers, vocab=tokenizer.vocab,
        description=teacher.describe(), num_frames=teacher.num_frames)
  return run_teacher
