"""Data parallelism: the step is written for one device's shard; this module runs it on all.

The step function takes `(state, batch)` for its shard and reduces across the named axis
`DATA_AXIS` with `lax.psum`/`lax.pmean`. `parallelize` runs it with `jax.jit` over
`jax.shard_map` on a 1-D mesh of all devices (batch split on its leading axis, state
replicated), or with `jax.pmap` when asked. On one device both are the plain jitted step.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  return Mesh(np.array(devices), (DATA_AXIS,))


def parallelize(step_fn: Callable, mesh: Mesh, *, mode: str = "shard_map",
                donate_state: bool = True) -> Callable:
  """Wraps `step_fn(state, batch) -> (state, metrics)`; metrics must be reduced already."""
  donate = (0,) if donate_state else ()
  if mode == "shard_map":
    mapped = jax.shard_map(step_fn, mesh=mesh, in_specs=(P(), P(DATA_AXIS)),
                           out_specs=(P(), P()), check_vma=False)
    return jax.jit(mapped, donate_argnums=donate)
  if mode == "pmap":
    raise NotImplementedError("parallel='pmap' arrives with the distillation step")
  raise ValueError(f"config.parallel={mode!r} is not 'shard_map' or 'pmap'")


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Places the numeric fields of a host batch on the mesh, split along the batch axis."""
  sharding = NamedSharding(mesh, P(DATA_AXIS))
  return {k: jax.device_put(v, sharding) for k, v in batch.items() if k != "ids"}


def replicate(tree: Any, mesh: Mesh) -> Any:
  return jax.device_put(tree, NamedSharding(mesh, P()))
