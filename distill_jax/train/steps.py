"""Train and eval steps, written for one device's shard of the batch.

Reductions across devices go through `lax.psum` over `parallel.DATA_AXIS`; run the steps with
`parallel.parallelize`. Every loss term is normalized by a count over the GLOBAL batch (target
tokens, frame weights, frames), so the update does not depend on how the batch is split over
devices. A non-finite loss or gradient skips the update (params and optimizer state untouched)
and is counted in `state.skipped`.

`make_train_step`: the student family's hard loss on the ground truth (CTC, joint
CTC-attention or RNN-T: `train/objectives.py`). `make_distill_train_step`: knowledge
distillation from a frozen teacher, online (teacher params are an argument of the step, never in
the optimizer state) or from the offline cache (teacher outputs are fields of the batch).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from distill_jax.decode import attention as att_decode
from distill_jax.decode import ctc as ctc_decode
from distill_jax.decode import transducer as rnnt_decode
from distill_jax.losses import frame_align, hidden, kl
from distill_jax.models import projection
from distill_jax.models.teacher import TeacherOutput
from distill_jax.train import objectives
from distill_jax.train.parallel import DATA_AXIS
from distill_jax.train.state import TrainState


def _finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]))


def guarded_update(tx: optax.GradientTransformation, params: Any, opt_state: Any,
                   loss: jax.Array, grads: Any) -> tuple[Any, Any, jax.Array]:
  """(params, opt_state, ok): one optimizer update, or none (both returned unchanged) when the
  loss or a gradient is not finite."""
  ok = jnp.isfinite(loss) & _finite(grads)
  updates, new_opt = tx.update(grads, opt_state, params)
  new_params = optax.apply_updates(params, updates)
  keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)
  return keep(new_params, params), keep(new_opt, opt_state), ok


def apply_update(state: TrainState, tx: optax.GradientTransformation, loss: jax.Array,
                 grads: Any) -> tuple[TrainState, jax.Array]:
  """`guarded_update` on the train state; a skipped update is counted in `state.skipped`."""
  params, opt_state, ok = guarded_update(tx, state.params, state.opt_state, loss, grads)
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                       skipped=state.skipped + (1 - ok.astype(jnp.int32))), ok


def make_train_step(model: nn.Module, tx: optax.GradientTransformation,
                        lr_schedule: optax.Schedule, blank_id: int = 0,
                        grad_accum_steps: int = 1,
                        head: objectives.HeadLoss | None = None) -> Callable:
  """Returns step(state, batch) -> (state, metrics) for training on one shard.

  The hard loss is the student family's (`train/objectives.py`: CTC, joint CTC-attention or
  RNN-T, settings in `head`).

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
  head = head or objectives.HeadLoss()

  def sum_and_grad(params, batch, key):
    """(loss sum, aux) over a (micro-)batch and the gradient of the sum."""
    k_drop, k_spec, k_aug = jax.random.split(key, 3)

    def loss_fn(params):
      out = objectives.apply_student(
          model, params, batch["waveform"], batch["wave_paddings"], batch["labels"],
          batch["label_paddings"], train=True,
          rngs={"dropout": k_drop, "specaug": k_spec, "augment": k_aug})
      res = objectives.hard_loss(model, head, out, batch["labels"], batch["label_paddings"],
                                 blank_id)
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
    new_state, ok = apply_update(state, tx, loss, grads)
    metrics = dict(
        loss=loss, grad_norm=optax.global_norm(grads), lr=lr_schedule(state.step),
        tokens=jax.lax.psum(aux["tokens"], DATA_AXIS),
        infeasible=jax.lax.psum(aux["infeasible"], DATA_AXIS),
        frames=jax.lax.psum(aux["frames"], DATA_AXIS),
        skipped=new_state.skipped, update_ok=ok)
    return new_state, metrics

  return step


HARD_LABELS = ("ground_truth", "teacher", "whisper")


@dataclasses.dataclass(frozen=True)
class KdSpec:
  """What the distillation step optimizes (losses/kl.py, frame_align.py, hidden.py):

    L = alpha * CTC(labels) + beta * T^2 KL(p_t^T || p_s^T) + gamma * L_hidden

  (for attention and transducer students the hard term is their family's loss, the KL reads
  their auxiliary CTC head and the hidden term their encoder's hidden states).

  Attributes:
    alpha, beta, gamma: weights of the hard, soft and hidden-state terms.
    temperature: T.
    blank_weight, blank_threshold: down-weighting of frames where the teacher is confidently
      blank (blank_weight 1.0 = off).
    frame_ratio: teacher frames per student frame (1, 2 or 4: 20 ms teacher, 20/40/80 ms
      student).
    hard_labels: 'ground_truth' (the batch's labels: the manifest's transcript), 'teacher'
      (the teacher's greedy CTC transcript, computed in the step from its posteriors: for a
      Whisper teacher its CTC head's) or 'whisper' (the batch's labels, which are Whisper's
      decoded transcripts: the train manifest is pseudo-labelled by
      `launch/whisper_transcribe.py`; `train/teacher.kd_spec` checks it). 'teacher' and
      'whisper' are sequence-level KD, for unlabeled audio.
    layer_pairs: (student_layer, teacher_layer) pairs of the hidden-state term.
    hidden_loss: 'nmse' or 'l1_cos'.
    teacher_dim: width of the teacher's hidden states (projection output size).
  """
  alpha: float = 1.0
  beta: float = 1.0
  gamma: float = 0.0
  temperature: float = 2.0
  blank_weight: float = 1.0
  blank_threshold: float = 0.9
  frame_ratio: int = 2
  hard_labels: str = "ground_truth"
  layer_pairs: tuple[tuple[int, int], ...] = ()
  hidden_loss: str = "l1_cos"
  teacher_dim: int = 0

  def __post_init__(self):
    if self.hard_labels not in HARD_LABELS:
      raise ValueError(f"distill.hard_labels={self.hard_labels!r} is not one of {HARD_LABELS}")
    if self.gamma and not self.layer_pairs:
      raise ValueError(f"distill.gamma={self.gamma} needs layer pairs for the hidden term")
    if self.layer_pairs and self.teacher_dim <= 0:
      raise ValueError("hidden-state distillation needs the teacher's hidden width")


# Online teacher: (teacher_params, waveform [B, S], wave_paddings [B, S]) -> TeacherOutput
# (`models/teacher.py`; e.g. `train.teacher.RunTeacher.forward`, the run's layers bound).
TeacherFn = Callable[[Any, jax.Array, jax.Array], TeacherOutput]

TEACHER_FIELDS = ("teacher_log_probs", "teacher_paddings", "teacher_hidden")


def _teacher_labels(log_probs: jax.Array, paddings: jax.Array,
                    blank_id: int) -> tuple[jax.Array, jax.Array]:
  """Greedy teacher transcripts as CTC targets: labels [B, Tt] and label paddings [B, Tt]."""
  ids, lengths = ctc_decode.ctc_greedy(log_probs, paddings, blank_id)
  label_paddings = (jnp.arange(ids.shape[1])[None, :] >= lengths[:, None]).astype(jnp.float32)
  return jnp.maximum(ids, 0), label_paddings


def make_distill_train_step(model: nn.Module, tx: optax.GradientTransformation,
                            lr_schedule: optax.Schedule, spec: KdSpec,
                            teacher_fn: TeacherFn | None = None, blank_id: int = 0,
                            head: objectives.HeadLoss | None = None) -> Callable:
  """Returns step(state, batch, teacher_params) -> (state, metrics) for one shard.

  `state.params` is {'student': the student's params, 'projections': the hidden-state
  projections' params ({} without a hidden term)}; only the student is kept for inference.
  With `teacher_fn`, the teacher runs inside the step on the shard's waveforms, frozen
  (stop_gradient; its params are the step's third argument, never in the optimizer state).
  Without it, the batch carries the cached teacher outputs (`data/teacher_cache.py`):
  teacher_log_probs [b, Tt, V], teacher_paddings [b, Tt] and, with a hidden term,
  teacher_hidden [b, P, Tt, Dt] (batch-major, so it is split over devices like every other
  field); `teacher_params` is then ignored (pass None).
  """
  projections = projection.HiddenProjections(spec.layer_pairs, spec.teacher_dim)
  head = head or objectives.HeadLoss()

  def teacher_outputs(teacher_params, batch):
    if teacher_fn is None:
      missing = [k for k in TEACHER_FIELDS[:2] if k not in batch]
      if missing:
        raise ValueError(f"the distillation step has no teacher_fn and the batch lacks the "
                         f"cached teacher fields {missing}")
      hid = batch.get("teacher_hidden")
      out = TeacherOutput(log_probs=batch["teacher_log_probs"],
                          hidden=None if hid is None else jnp.swapaxes(hid, 0, 1),
                          frame_paddings=batch["teacher_paddings"])
    else:
      out = teacher_fn(teacher_params, batch["waveform"], batch["wave_paddings"])
    return jax.tree_util.tree_map(jax.lax.stop_gradient, out)

  def step(state: TrainState, batch: dict[str, jax.Array],
           teacher_params: Any) -> tuple[TrainState, dict]:
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    key = jax.random.fold_in(key, jax.lax.axis_index(DATA_AXIS))
    k_drop, k_spec, k_aug = jax.random.split(key, 3)
    teacher = teacher_outputs(teacher_params, batch)
    if spec.hard_labels == "teacher":
      labels, label_paddings = _teacher_labels(teacher.log_probs, teacher.frame_paddings,
                                               blank_id)
    else:
      labels, label_paddings = batch["labels"], batch["label_paddings"]

    def loss_fn(params):
      out = objectives.apply_student(
          model, params["student"], batch["waveform"], batch["wave_paddings"], labels,
          label_paddings, train=True,
          rngs={"dropout": k_drop, "specaug": k_spec, "augment": k_aug})
      ts = out["paddings"].shape[1]
      t_lp, t_pad = frame_align.align_teacher(teacher.log_probs, teacher.frame_paddings,
                                              spec.frame_ratio, ts)
      pad = jnp.maximum(out["paddings"], t_pad)
      row_pad = jnp.maximum(pad, (batch["weights"] <= 0)[:, None].astype(pad.dtype))
      # Hard term: summed over the shard, normalized by the global count of target tokens.
      hard = objectives.hard_loss(model, head, out, labels, label_paddings, blank_id)
      w = hard["weights"] * batch["weights"]
      tokens = jnp.sum(jnp.sum(1.0 - label_paddings, 1) * w)
      hard_sum = jnp.sum(hard["per_example"] * w)
      counts, sums = dict(tokens=tokens), dict(hard=hard_sum)
      # Soft term: frame-weighted KL sum (T^2 included), normalized by the global weight. It
      # reads CTC posteriors: the CTC student's, or the auxiliary CTC head of the others.
      if "logits" in out:
        soft = kl.kl_divergence(out["logits"], t_lp, row_pad, spec.temperature,
                                blank_weight=spec.blank_weight,
                                blank_threshold=spec.blank_threshold, blank_id=blank_id)
        counts["kl_weight"], sums["kl"] = soft["weight"], soft["sum"]
      elif spec.beta:
        raise ValueError(f"distill.beta={spec.beta}: the frame-level KL needs CTC posteriors; "
                         "set config.model.aux_ctc=True (or distill.beta=0)")
      if spec.layer_pairs:
        t_hidden, _ = frame_align.align_hidden(teacher.hidden, teacher.frame_paddings,
                                               spec.frame_ratio, ts)
        s_states = projections.apply({"params": params["projections"]}, out["hidden_states"])
        hid = hidden.hidden_states_loss(s_states, list(t_hidden), row_pad, spec.hidden_loss)
        counts["frames"], sums["hidden"] = hid["num_frames"], hid["sum"]
      # The counts do not depend on the params, so normalizing inside the differentiated
      # function by their global sums gives the gradient of the global loss.
      norm = {k: jnp.maximum(jax.lax.psum(v, DATA_AXIS), 1e-9) for k, v in counts.items()}
      terms = dict(hard=sums["hard"] / norm["tokens"])
      total = spec.alpha * terms["hard"]
      if "kl" in sums:
        terms["kl"] = sums["kl"] / norm["kl_weight"]
        total = total + spec.beta * terms["kl"]
      if spec.layer_pairs:
        terms["hidden"] = sums["hidden"] / norm["frames"]
        total = total + spec.gamma * terms["hidden"]
      aux = dict(terms=terms, infeasible=hard["num_infeasible"], tokens=tokens,
                 frames=jnp.sum(1.0 - out["paddings"]))
      return total, aux

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    loss = jax.lax.psum(loss, DATA_AXIS)
    grads = jax.lax.psum(grads, DATA_AXIS)
    new_state, ok = apply_update(state, tx, loss, grads)
    psum = lambda x: jax.lax.psum(x, DATA_AXIS)
    metrics = dict(
        loss=loss, grad_norm=optax.global_norm(grads), lr=lr_schedule(state.step),
        **{f"loss_{k}": psum(v) for k, v in aux["terms"].items()},
        tokens=psum(aux["tokens"]), infeasible=psum(aux["infeasible"]),
        frames=psum(aux["frames"]), skipped=new_state.skipped, update_ok=ok)
    return new_state, metrics

  return step


def init_distill_params(model: nn.Module, spec: KdSpec, student_params: Any,
                        num_layers: int, rng: jax.Array) -> dict[str, Any]:
  """{'student': student_params, 'projections': fresh projection params ({} if unused)}."""
  proj = {}
  if spec.layer_pairs:
    states = jnp.zeros((num_layers + 1, 1, 1, model.encoder.model_dim), jnp.float32)
    proj = projection.HiddenProjections(spec.layer_pairs, spec.teacher_dim).init(
        rng, states)["params"]
  return dict(student=student_params, projections=proj)


def make_forward_step(model: nn.Module, eval_cfg=None) -> Callable:
  """Returns fwd(params, batch) -> outputs for evaluation on one shard.

  CTC students: dict(log_probs [B, T, V], paddings [B, T]) (decoded by `evaluate`). Attention
  and transducer students decode inside the step: dict(tokens [B, L] (-1 padded), lengths [B],
  scores [B]), greedy or beam search per `eval_cfg.decoder` / `beam_size` (greedy when
  eval_cfg is None) with the head's settings from `eval_cfg` (see configs/base.py).
  """
  kind = objectives.head_kind(model)
  if kind == "ctc":
    def fwd(params: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
      out = model.apply({"params": params}, batch["waveform"], batch["wave_paddings"],
                        train=False)
      return dict(log_probs=jax.nn.log_softmax(out["logits"]), paddings=out["paddings"])
    return fwd

  decoder = "greedy" if eval_cfg is None else eval_cfg.decoder
  if decoder not in ("greedy", "beam"):
    raise ValueError(f"config.eval.decoder={decoder!r}: the {kind} student decodes with "
                     "'greedy' or 'beam'")
  beam = 1 if decoder == "greedy" else int(eval_cfg.beam_size)

  def fwd(params: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    if kind == "attention":
      kw = {} if eval_cfg is None else dict(max_length_ratio=eval_cfg.max_length_ratio,
                                            length_penalty_alpha=eval_cfg.length_penalty)
      res = att_decode.decode_student(model, params, batch["waveform"], batch["wave_paddings"],
                                      beam_size=beam, **kw)
    else:
      kw = {} if eval_cfg is None else dict(max_symbols_per_frame=eval_cfg.max_symbols_per_frame)
      res = rnnt_decode.decode_student(model, params, batch["waveform"],
                                       batch["wave_paddings"], beam_size=beam, **kw)
    return dict(tokens=res["tokens"], lengths=res["lengths"], scores=res["score"])

  return fwd
