"""Orbax checkpoints in `workdir/checkpoints`: the whole train state plus a JSON record.

A checkpoint holds `state` (params, optimizer state, step, RNG, skip counter) and `extra`
(data position, config fingerprint, metrics, free-form metadata such as the teacher's path and
hash). Orbax writes each step to a temporary folder and renames it when complete, so a run
killed mid-save resumes from the previous complete step. The preservation policy keeps the
last `keep_last` steps and the `keep_best` steps with the lowest `best_metric`, plus every
multiple of `keep_every` and the steps in `keep_steps` (snapshots across training, e.g. for the
latent-trajectory page of `launch/visualize.py`).

A checkpoint is named 'latest', 'best', a step, or 'avg:K': the element-wise mean of the params
of the K latest kept checkpoints (icefall's `--avg`; keep them with `keep_every`), restored
with the rest of the state of the latest one.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as cm


AVERAGE_PREFIX = "avg:"


def average_count(which: str | int) -> int | None:
  """'avg:K' -> K (an error unless K >= 1); None for any other checkpoint name."""
  if not (isinstance(which, str) and which.startswith(AVERAGE_PREFIX)):
    return None
  k = which[len(AVERAGE_PREFIX):]
  if not k.isdigit() or int(k) < 1:
    raise ValueError(f"checkpoint {which!r}: 'avg:K' needs a count K >= 1")
  return int(k)


def tag(which: str | int, step: int) -> str:
  """Names a restored checkpoint in result folders: 'step700', or 'step700_avg5' for 'avg:5'."""
  k = average_count(which)
  return f"step{step}_avg{k}" if k else f"step{step}"


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

  def averaged_steps(self, which: str | int) -> list[int] | None:
    """'avg:K' -> the K latest kept steps (oldest first); None for any other name."""
    k = average_count(which)
    if k is None:
      return None
    steps = sorted(self.all_steps())
    if len(steps) < k:
      raise FileNotFoundError(f"checkpoint {which!r}: only {len(steps)} checkpoints in "
                              f"{self.directory} (steps {steps}); keep more with "
                              "config.train.keep_every")
    return steps[-k:]

  def resolve(self, which: str | int) -> int:
    """'latest' | 'best' | a step | 'avg:K' (its latest step) -> an existing step (error names
    what exists)."""
    averaged = self.averaged_steps(which)
    if averaged:
      return averaged[-1]
    steps = self.all_steps()
    if which == "latest":
      step = self.latest_step()
    elif which == "best":
      step = self.best_step()
    else:
      try:
        step = int(which)
      except ValueError:
        raise ValueError(f"checkpoint {which!r} is not 'latest', 'best', a step or "
                       "'avg:K'") from None
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
    averaged = self.averaged_steps(which)
    if averaged:
      return self._restore_average(averaged, target_state)
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

  def _restore_average(self, steps: list[int], target_state: Any) -> tuple[Any, dict, int]:
    """The latest step's state with params = the mean over `steps` (float64 sums, cast back)."""
    total = None
    for step in steps:
      state, extra, _ = self.restore(step, target_state)
      params = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), state.params)
      total = params if total is None else jax.tree_util.tree_map(np.add, total, params)
    mean = jax.tree_util.tree_map(
        lambda t, x: jax.device_put((t / len(steps)).astype(x.dtype), x.sharding),
        total, state.params)
    return state.replace(params=mean), extra, steps[-1]

  def restore_extra(self, which: str | int) -> dict:
    """The JSON metadata of a checkpoint alone (e.g. to build the restore target)."""
    step = self.resolve(which)
    out = self.manager.restore(step, args=ocp.args.Composite(extra=ocp.args.JsonRestore()))
    return dict(out["extra"])

  def close(self) -> None:
    self.manager.close()
