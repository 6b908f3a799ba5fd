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
                        lr_schedule: optax.Schedule, blank_id: int = 0) -> Callable:
  """Returns step(state, batch) -> (state, metrics) for CTC training on one shard."""

  def step(state: TrainState, batch: dict[str, jax.Array]) -> tuple[TrainState, dict]:
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    key = jax.random.fold_in(key, jax.lax.axis_index(DATA_AXIS))
    k_drop, k_spec, k_aug = jax.random.split(key, 3)

    def loss_fn(params):
      out = model.apply({"params": params}, batch["waveform"], batch["wave_paddings"],
                        train=True,
                        rngs={"dropout": k_drop, "specaug": k_spec, "augment": k_aug})
      res = ctc_loss_lib.ctc_loss(out["logits"], out["paddings"], batch["labels"],
                                  batch["label_paddings"], blank_id)
      weights = res["weights"] * batch["weights"]
      local_sum = jnp.sum(res["per_example"] * weights)
      local_tokens = jnp.sum(jnp.sum(1.0 - batch["label_paddings"], 1) * weights)
      global_tokens = jax.lax.psum(local_tokens, DATA_AXIS)
      aux = dict(tokens=local_tokens, infeasible=res["num_infeasible"],
                 frames=jnp.sum(1.0 - out["paddings"]))
      return local_sum / jnp.maximum(global_tokens, 1.0), aux

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    loss = jax.lax.psum(loss, DATA_AXIS)
    grads = jax.lax.psum(grads, DATA_AXIS)
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
