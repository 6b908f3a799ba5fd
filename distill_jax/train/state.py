"""Train state and optimizer. Everything a resume needs lives here or in the data position."""

from __future__ import annotations

import functools
import re
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


def param_path(path) -> str:
  """'encoder/layers_0/fc1/kernel' for a `tree_map_with_path` key path."""
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def frozen_labels(params: Any, patterns) -> Any:
  """'frozen' for every leaf whose path (`param_path`) a regex of `patterns` matches at its
  start (`re.match`), else 'train'. A pattern that matches no leaf is an error naming it."""
  compiled = [re.compile(p) for p in patterns]
  used = [False] * len(compiled)

  def label(path, _):
    name = param_path(path)
    hits = [i for i, c in enumerate(compiled) if c.match(name)]
    for i in hits:
      used[i] = True
    return "frozen" if hits else "train"

  labels = jax.tree_util.tree_map_with_path(label, params)
  unused = [p for p, u in zip(patterns, used) if not u]
  if unused:
    raise ValueError(f"config.train.frozen_params: {unused} match no parameter (paths look "
                     "like 'encoder/layers_0/fc1/kernel')")
  return labels


def make_optimizer(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """AdamW with global-norm clipping; no weight decay on biases and norm scales.

  Params matching `cfg.frozen_params` (regexes over 'a/b/kernel' paths) are never updated and
  hold no optimizer state (e.g. Whisper's encoder under a CTC head); clipping sees only the
  trained ones.
  """
  decay_mask = lambda params: jax.tree_util.tree_map_with_path(
      lambda path, p: p.ndim > 1, params)
  tx = optax.chain(
      optax.clip_by_global_norm(cfg.grad_clip),
      optax.adamw(learning_rate_schedule(cfg), b1=cfg.b1, b2=cfg.b2, eps=1e-8,
                  weight_decay=cfg.weight_decay, mask=decay_mask),
  )
  patterns = tuple(cfg.get("frozen_params", ()))  # absent from runs saved before it existed
  if not patterns:
    return tx
  return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()},
                               lambda params: frozen_labels(params, patterns))


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
