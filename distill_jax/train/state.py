"""Train state and optimizer. Everything a resume needs lives here or in the data position."""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: number of updates applied
  params: Any
  opt_state: Any
  rng: jax.Array  # base key; step keys are fold_in(rng, step)
  skipped: jax.Array  # int32 scalar: updates skipped for a non-finite loss or gradient


def learning_rate_schedule(cfg: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warmup to `cfg.lr`, then cosine decay to `cfg.lr * cfg.final_lr_ratio`."""
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=cfg.lr, warmup_steps=cfg.warmup_steps,
      decay_steps=max(cfg.num_steps, cfg.warmup_steps + 1),
      end_value=cfg.lr * cfg.final_lr_ratio)


def make_optimizer(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """AdamW with global-norm clipping; no weight decay on biases and norm scales."""
  decay_mask = lambda params: jax.tree_util.tree_map_with_path(
      lambda path, p: p.ndim > 1, params)
  return optax.chain(
      optax.clip_by_global_norm(cfg.grad_clip),
      optax.adamw(learning_rate_schedule(cfg), b1=cfg.b1, b2=cfg.b2, eps=1e-8,
                  weight_decay=cfg.weight_decay, mask=decay_mask),
  )


def create_state(params: Any, tx: optax.GradientTransformation, seed: int) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    rng=jax.random.key_data(jax.random.key(seed)),
                    skipped=jnp.zeros((), jnp.int32))


def count_params(params: Any) -> int:
  return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))


def init_params(model, batch_shapes, seed: int) -> Any:
  """Student params initialized on the shortest of `batch_shapes` ([(B, S, L), ...]; the
  dataset's `batch_shapes()`), batch of one."""
  b, s, _ = min(batch_shapes, key=lambda x: x[1])
  wav = jnp.zeros((1, s), jnp.float32)
  return jax.jit(functools.partial(model.init, train=False))(
      {"params": jax.random.key(seed)}, wav, jnp.zeros_like(wav))["params"]
