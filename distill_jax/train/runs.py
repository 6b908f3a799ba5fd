"""A run folder describes itself: its saved config, its checkpoints, the checks on resuming.

Everything that reads a training run folder after (or while) the loop wrote it goes through
here: evaluation, export to a Hugging Face folder, warm starts, the latent page, adaptation.
`saved_config(workdir)` is the config the run was trained with (saved beside every checkpoint),
so a caller needs only the folder: `restore_student(workdir, "best")` builds the model and
restores its params without any other flag.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from distill_jax import text as text_lib
from distill_jax.models import build
from distill_jax.train import checkpoint as ckpt_lib
from distill_jax.train import state as state_lib
from distill_jax.train import steps as steps_lib

# Config sections that must match between a checkpoint and the run resuming it.
RESUME_KEYS = ("model", "seed", "data.train", "data.buckets", "data.batch_seconds")


def config_value(cfg: ml_collections.ConfigDict, dotted: str):
  """The value at a dotted key ('data.train'), nested ConfigDicts as plain dicts."""
  for part in dotted.split("."):
    cfg = cfg[part]
  return cfg.to_dict() if isinstance(cfg, ml_collections.ConfigDict) else cfg


def as_json(v: Any) -> Any:
  """v as JSON gives it back (tuples were stored as lists), for comparing configs."""
  return json.loads(json.dumps(v))


def check_resume_config(config: ml_collections.ConfigDict, saved: dict) -> None:
  """Raises naming the config entries that differ from the checkpoint's run."""
  old = ml_collections.ConfigDict(saved)
  diffs = [k for k in RESUME_KEYS
           if as_json(config_value(config, k)) != as_json(config_value(old, k))]
  if diffs:
    raise ValueError(f"the checkpoint in this workdir was made with a different {diffs}; "
                     "use a new --workdir or the original config")


def is_distillation(config: ml_collections.ConfigDict) -> bool:
  return bool(config.distill.teacher)


def check_resume_teacher(current: dict | None, saved: dict | None) -> None:
  """Raises when a run resumes with another teacher than its checkpoint was made with."""
  cur = current and current["teacher_fingerprint"]
  old = saved and saved.get("teacher_fingerprint")
  if cur != old:
    what = lambda m: (f"teacher {m['teacher_path']} (params fingerprint "
                      f"{m['teacher_fingerprint'][:12]}...)" if m else "no teacher")
    raise ValueError(f"the checkpoint in this workdir was trained with {what(saved)}, this run "
                     f"has {what(current)}; use a new --workdir or the original teacher")


def saved_extra(workdir: str) -> dict[str, Any]:
  """What a run saved beside its latest checkpoint's arrays (config, data position, teacher)."""
  ckpt = ckpt_lib.Checkpointer(workdir, read_only=True)
  try:
    if ckpt.latest_step() is None:
      raise FileNotFoundError(f"no checkpoints in {ckpt.directory}: not a training run folder")
    return ckpt.restore_extra("latest")
  finally:
    ckpt.close()


def saved_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run saved with its latest checkpoint."""
  return ml_collections.ConfigDict(saved_extra(workdir)["config"])


def restore_student(workdir: str, which: str | int = "latest", with_projections: bool = False):
  """(model, student params, tokenizer, step) from a run folder's checkpoint.

  The model is built from the run's saved config (`saved_config`). A distillation run's
  checkpoint also holds the hidden-state projections; only the student's params are returned,
  unless `with_projections` (then {'student': ..., 'projections': ...}, as trained).
  """
  config = saved_config(workdir)
  tokenizer = text_lib.CharTokenizer.from_file(workdir)
  model = build.build_student(config.model, tokenizer.vocab_size, bos_id=tokenizer.bos_id,
                              eos_id=tokenizer.eos_id, blank_id=tokenizer.blank_id)
  wav = jnp.zeros((1, 16000), jnp.float32)
  ckpt = ckpt_lib.Checkpointer(workdir, read_only=True)

  def shapes():
    params = jax.eval_shape(functools.partial(model.init, train=False),
                            {"params": jax.random.key(0)}, wav, wav)["params"]
    if is_distillation(config):
      kd = ckpt.restore_extra(which)["distill"]
      spec = steps_lib.KdSpec(layer_pairs=tuple(map(tuple, kd["layer_pairs"])),
                              teacher_dim=kd["teacher_dim"])
      params = jax.eval_shape(
          lambda p: steps_lib.init_distill_params(model, spec, p, kd["student_layers"],
                                                  jax.random.key(0)), params)
    return params

  tx = state_lib.make_optimizer(config.train)
  target = jax.eval_shape(lambda p: state_lib.create_state(p, tx, 0), shapes())
  state, _, step = ckpt.restore(which, target)
  ckpt.close()
  params = (state.params["student"] if is_distillation(config) and not with_projections
            else state.params)
  return model, params, tokenizer, step
