"""Orbax checkpoints in `workdir/checkpoints`: the whole train state plus a JSON record.

A checkpoint holds `state` (params, optimizer state, step, RNG, skip counter) and `extra`
(data position, config fingerprint, metrics, free-form metadata such as the teacher's path and
hash). Orbax writes each step to a temporary folder and renames it when complete, so a run
killed mid-save resumes from the previous complete step. The preservation policy keeps the
last `keep_last` steps and the `keep_best` steps with the lowest `best_metric`, plus every
multiple of `keep_every` and the steps in `keep_steps` (snapshots across training, e.g. for the
latent-trajectory page of `launch/visualize.py`).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as cm


class Checkpointer:

  def __init__(self, workdir: str, *, keep_last: int = 3, keep_best: int = 1,
               best_metric: str = "dev_wer", read_only: bool = False, keep_every: int = 0,
               keep_steps: tuple[int, ...] = ()):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self.best_metric = best_metric
    policies = [
        cm.LatestN(n=keep_last),
        cm.BestN(get_metric_fn=lambda m: m[best_metric], reverse=True, n=keep_best,
                 keep_checkpoints_without_metrics=False),
    ]
    if keep_every:
      policies.append(cm.EveryNSteps(interval_steps=int(keep_every)))
    if keep_steps:
      policies.append(cm.CustomSteps(steps=[int(x) for x in keep_steps]))
    policy = cm.AnyPreservationPolicy(policies)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            preservation_policy=policy, create=not read_only, read_only=read_only,
            enable_async_checkpointing=False),
        item_names=("state", "extra"))

  def save(self, step: int, state: Any, extra: dict, metrics: dict | None = None) -> None:
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave(extra)),
        metrics=metrics, force=True)
    self.manager.wait_until_finished()

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    return self.manager.best_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def resolve(self, which: str | int) -> int:
    """'latest' | 'best' | a step number -> an existing step (error names what exists)."""
    steps = self.all_steps()
    if which == "latest":
      step = self.latest_step()
    elif which == "best":
      step = self.best_step()
    else:
      try:
        step = int(which)
      except ValueError:
        raise ValueError(f"checkpoint {which!r} is not 'latest', 'best' or a step") from None
      if step not in steps:
        step = None
    if step is None:
      raise FileNotFoundError(f"no checkpoint {which!r} in {self.directory}; steps: {steps}")
    return step

  def restore(self, which: str | int, target_state: Any) -> tuple[Any, dict, int]:
    """Restores into the structure (and shardings) of `target_state`.

    Leaves without a sharding (e.g. from `jax.eval_shape`) land on this process's first device,
    so a checkpoint written by a multi-host run restores on one machine too.
    """
    step = self.resolve(which)
    local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

    def abstract_leaf(x):
      x = ocp.utils.to_shape_dtype_struct(x)
      if getattr(x, "sharding", None) is None:
        x = jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=local)
      return x

    abstract = jax.tree_util.tree_map(abstract_leaf, target_state)
    out = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), extra=ocp.args.JsonRestore()))
    return out["state"], dict(out["extra"]), step

  def restore_extra(self, which: str | int) -> dict:
    """The JSON metadata of a checkpoint alone (e.g. to build the restore target)."""
    step = self.resolve(which)
    out = self.manager.restore(step, args=ocp.args.Composite(extra=ocp.args.JsonRestore()))
    return dict(out["extra"])

  def close(self) -> None:
    self.manager.close()
