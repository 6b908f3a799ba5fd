"""Data parallelism: the step is written for one device's shard; this module runs it on all.

The step function takes `(state, batch)` for its shard and reduces across the named axis
`DATA_AXIS` with `lax.psum`/`lax.pmean`. `parallelize` wraps it in a `Parallel`, which runs it
with `jax.jit` over `jax.shard_map` on a 1-D mesh of all devices (batch split on its leading
axis, state replicated), or with `jax.pmap` when asked, and owns the layouts each mode needs:

  mode        state on devices            batch on devices            metrics out
  shard_map   global shapes, replicated   [B, ...] split on axis 0    replicated scalars
  pmap        [N, ...] one copy/device    [N, B/N, ...]               [N] (equal copies)

Callers never look at those layouts: they go through `put_state` / `get_state` (one copy, for
checkpoints and evaluation), `put_batch` and `get_metrics`. On one device both modes are the
plain jitted step.

Multi-host (`initialize_distributed`, then one process per host): the mesh spans every
process's devices; each process feeds only its own rows of the global batch (the input pipeline
slices them by `jax.process_index()`), which `put_batch` assembles into the global array with
`jax.make_array_from_process_local_data`. Metrics and `local_copy` read the replica on one of
this process's own devices, so evaluation runs on each host without collectives.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
MODES = ("shard_map", "pmap")


def initialize_distributed(cfg) -> None:
  """`jax.distributed.initialize` from `config.distributed` when `enabled` (before any JAX work).

  Empty `coordinator` / `num_processes` < 1 / `process_id` < 0 let JAX detect them (TPU pod
  slices, SLURM, Open MPI, Kubernetes); set them for other GPU clusters. On CPU hosts the
  collectives go over gloo.
  """
  if not cfg.enabled:
    return
  kwargs = {}
  if cfg.coordinator:
    kwargs["coordinator_address"] = cfg.coordinator
  if cfg.num_processes > 0:
    kwargs["num_processes"] = int(cfg.num_processes)
  if cfg.process_id >= 0:
    kwargs["process_id"] = int(cfg.process_id)
  if cfg.get("cpu_collectives"):
    jax.config.update("jax_cpu_collectives_implementation", cfg.cpu_collectives)
  jax.distributed.initialize(**kwargs)


def is_main_process() -> bool:
  """True on the process that writes logs, metrics and evaluation files (process 0)."""
  return jax.process_index() == 0


def local_copy(tree: Any) -> Any:
  """A replicated tree -> the copy on this process's first device (plain single-device arrays,
  usable by a jitted function that runs on this host alone, e.g. evaluation)."""
  return jax.tree_util.tree_map(
      lambda x: x.addressable_data(0) if isinstance(x, jax.Array) else x, tree)


def make_mesh(devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  return Mesh(np.array(devices), (DATA_AXIS,))


def check_batch_divides(batch: dict[str, Any], num_devices: int) -> int:
  """Returns the batch size B, raising unless every field's leading size is B and N | B."""
  sizes = {k: np.shape(v)[0] for k, v in batch.items() if k != "ids"}
  if len(set(sizes.values())) != 1:
    raise ValueError(f"batch fields have different leading sizes: {sizes}")
  b = next(iter(sizes.values()))
  if b % num_devices:
    raise ValueError(f"batch size {b} is not divisible by the number of devices "
                     f"({num_devices}); make batch sizes multiples of the device count "
                     "(pipeline.BucketSpec(shards=...))")
  return b


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Places the numeric fields of this process's batch rows on the mesh, split along the
  batch axis.

  Args:
    batch: host arrays with a common leading size B_local (`ids`, if present, is dropped): the
      whole batch on one process, this process's rows of it on several.
    mesh: the 1-D data mesh of N devices (all processes' devices).

  Returns:
    The fields as global [B, ...] arrays (B = B_local x processes), rows B/N * i ... on
    device i.

  Raises:
    ValueError: naming the sizes when this process's devices do not divide its rows.
  """
  local = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
  check_batch_divides(batch, len(local))
  sharding = NamedSharding(mesh, P(DATA_AXIS))
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items() if k != "ids"}


def replicate(tree: Any, mesh: Mesh) -> Any:
  """One copy of `tree` on every device of the mesh (global shapes unchanged).

  On several processes each one passes the same values (same seed, or the same checkpoint)
  and places its own copies.
  """
  sharding = NamedSharding(mesh, P())
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  return jax.tree_util.tree_map(
      lambda x: jax.make_array_from_process_local_data(
          sharding, np.asarray(jax.device_get(local_copy(x)))), tree)


class Parallel:
  """A per-shard step run on every device of `mesh`, with the data layouts it needs.

  Use as
    par = parallelize(step_fn, mesh, mode=config.parallel)
    state = par.put_state(state)
    state, metrics = par.step(state, par.put_batch(host_batch))
    host_state = par.get_state(state); host_metrics = par.get_metrics(metrics)
  """

  def __init__(self, step_fn: Callable, mesh: Mesh, mode: str, donate_state: bool = True,
               num_frozen: int = 0):
    if mode not in MODES:
      raise ValueError(f"config.parallel={mode!r} is not one of {MODES}")
    if mesh.axis_names != (DATA_AXIS,):
      raise ValueError(f"the mesh must be 1-D with axis {DATA_AXIS!r}, got {mesh.axis_names}")
    self.mode, self.mesh = mode, mesh
    self.devices = list(mesh.devices.flat)
    self._local = [d for d in self.devices if d.process_index == jax.process_index()]
    self._split = NamedSharding(mesh, P(DATA_AXIS))
    donate = (0,) if donate_state else ()
    if mode == "shard_map":
      mapped = jax.shard_map(step_fn, mesh=mesh,
                             in_specs=(P(), P(DATA_AXIS)) + (P(),) * num_frozen,
                             out_specs=(P(), P()), check_vma=False)
      self.step = jax.jit(mapped, donate_argnums=donate)
    else:
      self.step = jax.pmap(step_fn, axis_name=DATA_AXIS, devices=self.devices,
                           donate_argnums=donate)

  @property
  def num_devices(self) -> int:
    return len(self.devices)

  def __call__(self, state: Any, batch: dict[str, jax.Array], *frozen) -> tuple[Any, dict]:
    return self.step(state, batch, *frozen)

  def put_frozen(self, tree: Any) -> Any:
    """Frozen inputs of the step (e.g. teacher params): laid out like the state, never
    donated."""
    return self.put_state(tree)

  def put_state(self, state: Any) -> Any:
    """Host (or single-copy) state -> the step's layout: replicated, or [N, ...] for pmap."""
    if self.mode == "shard_map":
      return replicate(state, self.mesh)
    n = self.num_devices

    def stack(x):
      x = np.asarray(jax.device_get(local_copy(x)))[None]
      return jax.make_array_from_single_device_arrays(
          (n,) + x.shape[1:], self._split, [jax.device_put(x, d) for d in self._local])

    return jax.tree_util.tree_map(stack, state)

  def get_state(self, state: Any) -> Any:
    """The step's layout -> one copy with the original shapes (checkpoints, evaluation).

    For pmap this is device 0's copy, kept on device 0 (no host round trip).
    """
    if self.mode == "shard_map":
      return state
    return jax.tree_util.tree_map(lambda x: x.addressable_data(0)[0], state)

  def put_batch(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """Host batch of B rows -> device layout: [B, ...] split, or [N, B/N, ...] for pmap.

    Drops `ids`. Raises ValueError naming B and N when N does not divide B.
    """
    if self.mode == "shard_map":
      return shard_batch(batch, self.mesh)
    n = len(self._local)
    b = check_batch_divides(batch, n)
    return {k: jax.make_array_from_process_local_data(
        self._split, np.reshape(v, (n, b // n) + np.shape(v)[1:]))
            for k, v in batch.items() if k != "ids"}

  def get_metrics(self, metrics: Any) -> Any:
    """Metrics (any pytree of them, e.g. a list of per-step dicts) -> host numpy, one copy."""
    host = jax.device_get(local_copy(metrics))
    if self.mode == "shard_map":
      return host
    return jax.tree_util.tree_map(lambda x: x[0], host)

  def compiled_programs(self) -> int | None:
    """How many programs the step has compiled (None when JAX does not say)."""
    size = getattr(self.step, "_cache_size", None)
    return size() if callable(size) else None


def parallelize(step_fn: Callable, mesh: Mesh, *, mode: str = "shard_map",
                donate_state: bool = True, num_frozen: int = 0) -> Parallel:
  """Wraps `step_fn(state, batch, *frozen) -> (state, metrics)`; metrics reduced already.

  Args:
    step_fn: the step for one device's shard; reduces over `DATA_AXIS` with psum/pmean.
    mesh: 1-D mesh (`make_mesh()`) of the devices to run on.
    mode: 'shard_map' (jit over shard_map) or 'pmap'.
    donate_state: donate the state buffers to the step (do not reuse the input state).
    num_frozen: number of extra replicated, read-only arguments after the batch (e.g. the
      teacher params of the distillation step; place them with `put_frozen`).

  Returns:
    A `Parallel`: `.step` / call, plus `put_state`, `get_state`, `put_batch`, `get_metrics`.
  """
  return Parallel(step_fn, mesh, mode, donate_state, num_frozen)
