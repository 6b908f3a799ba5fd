"""Training steps of the denoiser: a jitted generator step and a jitted discriminator step.

Reconstruction only (`config.gan.enabled = False`):
  L_G = w_stft MR-STFT(y, s) + w_sisdr (-SI-SDR(y, s))
Adversarial (`config.gan.enabled = True`), added to L_G:
  + w_adv sum_k (1 - D_k(y))^2 + w_fm FM(D(s), D(y))        (multi-resolution discriminator)
  + w_metric (M(s, y) - 1)^2                                (metric discriminator)
and the discriminators minimise
  sum_k (1 - D_k(s))^2 + D_k(y)^2 + (M(s, s) - 1)^2 + (M(s, y) - Q(y))^2 [+ (M(s, x) - Q(x))^2]
with Q a normalized quality score computed on the host (`enhance.metrics.quality_proxy`), since
PESQ and STOI are not differentiable nor jittable. Hence two steps: the generator step returns
the enhanced batch y; the host scores it; the discriminator step takes y and Q(y).

Batches: {'noisy': [B, S], 'clean': [B, S]} float32, S a multiple of the hop. An update whose
loss or gradient is not finite is skipped (params and optimizer state kept) and counted.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from distill_jax.enhance import discriminators as disc_lib
from distill_jax.enhance import losses
from distill_jax.enhance import metrics as metrics_lib
from distill_jax.enhance import model as model_lib

Array = jax.Array


@flax.struct.dataclass
class GanState:
  step: Array  # int32: generator updates applied
  g_params: Any
  g_opt: Any
  d_params: Any  # {'mrd': ..., 'metric': ...} (the enabled ones; {} for reconstruction only)
  d_opt: Any
  skipped: Array  # int32: skipped generator + discriminator updates


@flax.struct.dataclass
class Models:
  generator: model_lib.Denoiser = flax.struct.field(pytree_node=False)
  mrd: disc_lib.MultiResolutionDiscriminator | None = flax.struct.field(pytree_node=False)
  metric: disc_lib.MetricDiscriminator | None = flax.struct.field(pytree_node=False)


def build_models(config: ml_collections.ConfigDict) -> Models:
  g = config.gan
  mrd = metric = None
  if g.enabled and g.mrd:
    mrd = disc_lib.MultiResolutionDiscriminator(tuple(map(tuple, g.mrd_resolutions)),
                                                g.channels)
  if g.enabled and g.metric:
    metric = disc_lib.MetricDiscriminator(channels=g.channels)
  if g.enabled and mrd is None and metric is None:
    raise ValueError("config.gan.enabled=True with gan.mrd=False and gan.metric=False: enable "
                     "at least one discriminator")
  return Models(model_lib.build(config.model), mrd, metric)


def _optimizer(lr: float, cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  sched = optax.warmup_cosine_decay_schedule(
      0.0, lr, cfg.warmup_steps, max(cfg.num_steps, cfg.warmup_steps + 1), lr * cfg.final_lr_ratio)
  return optax.chain(optax.clip_by_global_norm(cfg.grad_clip),
                     optax.adamw(sched, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay))


def optimizers(config) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
  return _optimizer(config.train.lr, config.train), _optimizer(config.train.d_lr, config.train)


def init_state(config: ml_collections.ConfigDict, models: Models, seed: int,
               segment: int) -> GanState:
  """Fresh params: generator from `seed`, discriminators from seed + 1 on a [1, segment] crop."""
  g_params = model_lib.init_params(models.generator, seed)
  wav = jnp.zeros((1, segment), jnp.float32)
  d_params = {}
  keys = jax.random.split(jax.random.key(seed + 1), 2)
  if models.mrd is not None:
    d_params["mrd"] = jax.jit(models.mrd.init)(keys[0], wav)["params"]
  if models.metric is not None:
    d_params["metric"] = jax.jit(models.metric.init)(keys[1], wav, wav)["params"]
  tx_g, tx_d = optimizers(config)
  return GanState(step=jnp.zeros((), jnp.int32), g_params=g_params, g_opt=tx_g.init(g_params),
                  d_params=d_params, d_opt=tx_d.init(d_params), skipped=jnp.zeros((), jnp.int32))


def read_run_config(workdir: str) -> ml_collections.ConfigDict:
  """WORKDIR/config.json of a denoiser run (written by enhance/loop.py)."""
  import json
  import os
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{workdir}: not a denoiser run folder (no config.json)")
  with open(path, encoding="utf-8") as f:
    return ml_collections.ConfigDict(json.load(f))


def restore_generator(workdir: str, which: str | int = "latest"
                      ) -> tuple[ml_collections.ConfigDict, Any]:
  """(the run's config, its generator params) from a run folder; `which` is 'latest', 'best'
  (lowest dev -SI-SDR) or a step."""
  from distill_jax.train import checkpoint as ckpt_lib
  config = read_run_config(workdir)
  target = init_state(config, build_models(config), config.seed, config.model.hop * 8)
  ckpt = ckpt_lib.Checkpointer(workdir, best_metric="dev_neg_sisdr", read_only=True)
  try:
    restored, _, _ = ckpt.restore(which, target)
  finally:
    ckpt.close()
  return config, restored.g_params


def warm_start_generator(config: ml_collections.ConfigDict, source: str) -> dict[str, Any]:
  """{'g_params', 'g_opt'} from run `source` = 'WORKDIR[@STEP]' (STEP: a step, 'best' or
  'latest', the default): its generator's params, with a fresh optimizer state. The source's
  generator config (WORKDIR/config.json) must equal `config.model`, or the error names the
  fields that differ."""
  import json
  workdir, _, which = source.partition("@")
  mine, theirs = config.model.to_dict(), read_run_config(workdir).model.to_dict()
  diff = sorted(k for k in set(mine) | set(theirs)
                if json.dumps(mine.get(k)) != json.dumps(theirs.get(k)))
  if diff:
    raise ValueError(f"config.train.init_from={source!r}: its model config differs in {diff}")
  _, g_params = restore_generator(workdir, which or "latest")
  tx_g, _ = optimizers(config)
  return dict(g_params=g_params, g_opt=tx_g.init(g_params))


def _apply_if_finite(loss, grads, params, opt_state, tx):
  updates, new_opt = tx.update(grads, opt_state, params)
  new_params = optax.apply_updates(params, updates)
  gnorm = optax.global_norm(grads)
  ok = jnp.isfinite(loss) & jnp.isfinite(gnorm)
  keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)
  return keep(new_params, params), keep(new_opt, opt_state), gnorm, ok


def make_generator_step(config: ml_collections.ConfigDict, models: Models) -> Callable:
  """(state, batch) -> (state, metrics {name: scalar}, enhanced [B, S]); jitted."""
  lc, gc = config.loss, config.gan
  resolutions = tuple(map(tuple, lc.resolutions))
  tx_g, _ = optimizers(config)

  def loss_fn(g_params, d_params, batch):
    est = model_lib.enhance(models.generator, g_params, batch["noisy"])
    clean = batch["clean"]
    mr = losses.multi_resolution_stft_loss(est, clean, resolutions)
    sisdr = jnp.mean(losses.si_sdr(est, clean))
    terms = dict(stft=mr["loss"], sisdr=sisdr)
    loss = lc.stft_weight * mr["loss"] - lc.sisdr_weight * sisdr
    if models.mrd is not None:
      fake = models.mrd.apply({"params": d_params["mrd"]}, est)
      real = models.mrd.apply({"params": d_params["mrd"]}, clean)
      terms["adv"] = losses.generator_adversarial_loss(fake)
      terms["fm"] = losses.feature_matching_loss(real, fake)
      loss = loss + gc.adv_weight * terms["adv"] + gc.fm_weight * terms["fm"]
    if models.metric is not None:
      score = models.metric.apply({"params": d_params["metric"]}, clean, est)
      terms["metric_g"] = losses.metric_generator_loss(score)
      loss = loss + gc.metric_weight * terms["metric_g"]
    return loss, (terms, est)

  @jax.jit
  def step(state: GanState, batch: dict) -> tuple[GanState, dict, Array]:
    d_params = jax.lax.stop_gradient(state.d_params)
    (loss, (terms, est)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.g_params, d_params, batch)
    params, opt, gnorm, ok = _apply_if_finite(loss, grads, state.g_params, state.g_opt, tx_g)
    state = state.replace(step=state.step + 1, g_params=params, g_opt=opt,
                          skipped=state.skipped + (~ok).astype(jnp.int32))
    return state, dict(loss=loss, grad_norm=gnorm, **terms), est

  return step


def make_discriminator_step(config: ml_collections.ConfigDict, models: Models) -> Callable:
  """(state, batch, enhanced [B, S], q_enhanced [B], q_noisy [B]) -> (state, metrics); jitted.
  `q_*` are normalized quality scores (ignored without a metric discriminator)."""
  gc = config.gan
  _, tx_d = optimizers(config)

  def loss_fn(d_params, batch, est, q_est, q_noisy):
    clean = batch["clean"]
    terms, loss = {}, 0.0
    if models.mrd is not None:
      real = models.mrd.apply({"params": d_params["mrd"]}, clean)
      fake = models.mrd.apply({"params": d_params["mrd"]}, est)
      terms["d_mrd"] = losses.discriminator_loss(real, fake)
      loss = loss + terms["d_mrd"]
    if models.metric is not None:
      m = lambda x: models.metric.apply({"params": d_params["metric"]}, clean, x)
      on_noisy = gc.metric_on_noisy
      terms["d_metric"] = losses.metric_discriminator_loss(
          m(clean), m(est), q_est, m(batch["noisy"]) if on_noisy else None,
          q_noisy if on_noisy else None)
      loss = loss + terms["d_metric"]
    return loss, terms

  @jax.jit
  def step(state: GanState, batch: dict, est: Array, q_est: Array,
           q_noisy: Array) -> tuple[GanState, dict]:
    est = jax.lax.stop_gradient(est)
    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.d_params, batch, est, q_est, q_noisy)
    params, opt, gnorm, ok = _apply_if_finite(loss, grads, state.d_params, state.d_opt, tx_d)
    state = state.replace(d_params=params, d_opt=opt,
                          skipped=state.skipped + (~ok).astype(jnp.int32))
    return state, dict(d_loss=loss, d_grad_norm=gnorm, **terms)

  return step


class Trainer:
  """The step pair plus the host-side quality scoring between them.

  `trainer.step(state, batch) -> (state, metrics)`: generator update, then (adversarial
  configs) Q(y) and Q(x) on the host and the discriminator update.
  """

  def __init__(self, config: ml_collections.ConfigDict, models: Models):
    self.config = config
    self.models = models
    self.g_step = make_generator_step(config, models)
    self.d_step = make_discriminator_step(config, models) if config.gan.enabled else None

  def step(self, state: GanState, batch: dict) -> tuple[GanState, dict]:
    batch = {k: jnp.asarray(batch[k], jnp.float32) for k in ("noisy", "clean")}
    state, m, est = self.g_step(state, batch)
    if self.d_step is None:
      return state, m
    b = batch["clean"].shape[0]
    q_est = q_noisy = np.zeros((b,), np.float32)
    if self.models.metric is not None:
      proxy = self.config.gan.proxy
      sr = self.config.model.sample_rate
      clean = np.asarray(batch["clean"])
      q_est = metrics_lib.quality_proxy(proxy, clean, np.asarray(est), sr)
      if self.config.gan.metric_on_noisy:
        q_noisy = metrics_lib.quality_proxy(proxy, clean, np.asarray(batch["noisy"]), sr)
    state, dm = self.d_step(state, batch, est, jnp.asarray(q_est), jnp.asarray(q_noisy))
    return state, dict(m, **dm, q_enhanced=float(np.mean(q_est)))
