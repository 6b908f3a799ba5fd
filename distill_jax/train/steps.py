"""Train and eval steps, written for one device's shard of the batch.

Reductions across devices go through `lax.psum` over `parallel.DATA_AXIS`; run the steps with
`parallel.parallelize`. The loss is normalized by the number of target tokens in the GLOBAL
batch, so the update does not depend on how the batch is split over devices.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from distill_jax.losses import ctc as ctc_loss_lib
from distill_jax.train.parallel import DATA_AXIS
from distill_jax.train.state import TrainState


def _finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]))


def make_ctc_train_step(model: nn.Module, tx: optax.GradientTransformation,
                        lr_schedule: optax.Schedule, blank_id: int = 0,
                        grad_accum_steps: int = 1) -> Callable:
  """Returns step(state, batch) -> (state, metrics) for CTC training on one shard.

  The shard's batch (waveform [b, S], wave_paddings [b, S], labels [b, L], label_paddings
  [b, L], weights [b]) is processed as `grad_accum_steps` = k micro-batches of b/k rows in a
  `lax.scan`: their loss sums and gradients are added up, then divided once by the number of
  target tokens in the global batch, so k micro-batches give the update of one batch (up to
  float rounding; dropout/SpecAugment draw a separate key per micro-batch when k > 1).

  Raises:
    ValueError: (at trace time) when k does not divide the shard's batch size b.
  """
  if grad_accum_steps < 1:
    raise ValueError(f"grad_accum_steps must be >= 1, got {grad_accum_steps}")

  def sum_and_grad(params, batch, key):
    """(loss sum, aux) over a (micro-)batch and the gradient of the sum."""
    k_drop, k_spec, k_aug = jax.random.split(key, 3)

    def loss_fn(params):
      out = model.apply({"params": params}, batch["waveform"], batch["wave_paddings"],
                        train=True,
                        rngs={"dropout": k_drop, "specaug": k_spec, "augment": k_aug})
      res = ctc_loss_lib.ctc_loss(out["logits"], out["paddings"], batch["labels"],
                                  batch["label_paddings"], blank_id)
      weights = res["weights"] * batch["weights"]
      aux = dict(tokens=jnp.sum(jnp.sum(1.0 - batch["label_paddings"], 1) * weights),
                 infeasible=res["num_infeasible"], frames=jnp.sum(1.0 - out["paddings"]))
      return jnp.sum(res["per_example"] * weights), aux

    return jax.value_and_grad(loss_fn, has_aux=True)(params)

  def accumulate(params, batch, key):
    k = grad_accum_steps
    if k == 1:
      return sum_and_grad(params, batch, key)
    b = batch["waveform"].shape[0]
    if b % k:
      raise ValueError(f"the per-device batch of {b} rows does not split into "
                       f"train.grad_accum_steps={k} micro-batches")
    micro = jax.tree_util.tree_map(lambda x: x.reshape((k, b // k) + x.shape[1:]), batch)
    first = jax.tree_util.tree_map(lambda x: x[0], micro)
    zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype),
                                   jax.eval_shape(sum_and_grad, params, first, key))

    def body(total, xs):
      i, mb = xs
      out = sum_and_grad(params, mb, jax.random.fold_in(key, i))
      return jax.tree_util.tree_map(jnp.add, total, out), None

    total, _ = jax.lax.scan(body, zeros, (jnp.arange(k), micro))
    return total

  def step(state: TrainState, batch: dict[str, jax.Array]) -> tuple[TrainState, dict]:
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    key = jax.random.fold_in(key, jax.lax.axis_index(DATA_AXIS))
    (local_sum, aux), grads = accumulate(state.params, batch, key)
    # d(local_sum / global_tokens) = d(local_sum) / global_tokens: token counts and CTC
    # feasibility depend on lengths only, not on the parameters.
    norm = jnp.maximum(jax.lax.psum(aux["tokens"], DATA_AXIS), 1.0)
    loss = jax.lax.psum(local_sum, DATA_AXIS) / norm
    grads = jax.tree_util.tree_map(lambda g: g / norm, jax.lax.psum(grads, DATA_AXIS))
    ok = jnp.isfinite(loss) & _finite(grads)
    updates, new_opt = tx.update(grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)
    new_state = state.replace(
        step=state.step + 1, params=keep(new_params, state.params),
        opt_state=keep(new_opt, state.opt_state),
        skipped=state.skipped + (1 - ok.astype(jnp.int32)))
    metrics = dict(
        loss=loss, grad_norm=optax.global_norm(grads), lr=lr_schedule(state.step),
        tokens=jax.lax.psum(aux["tokens"], DATA_AXIS),
        infeasible=jax.lax.psum(aux["infeasible"], DATA_AXIS),
        frames=jax.lax.psum(aux["frames"], DATA_AXIS),
        skipped=new_state.skipped, update_ok=ok)
    return new_state, metrics

  return step


def make_forward_step(model: nn.Module) -> Callable:
  """Returns fwd(params, batch) -> dict(logits, paddings) for evaluation on one shard."""

  def fwd(params: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    out = model.apply({"params": params}, batch["waveform"], batch["wave_paddings"],
                      train=False)
    return dict(log_probs=jax.nn.log_softmax(out["logits"]), paddings=out["paddings"])

  return fwd
