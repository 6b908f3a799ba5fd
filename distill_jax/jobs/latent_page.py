"""Everything the latent-trajectory page shows, computed in JAX from a distillation run folder.

The page itself (its data classes, HTML and projector export) is `viz/page.py`; this job reads
the run (`train/runs.py`) and runs its teacher and student checkpoints.

`compute_page_data(workdir, split=..., utterances=5)` reads the run's config from its latest
checkpoint (or takes one), restores the frozen teacher (`config.distill.teacher`) and the
student at every kept checkpoint step (`config.train.keep_every` / `keep_steps` keep snapshots
across training), runs both on the first utterances of a split, and returns plain numpy arrays
and JSON-able metadata:

- per utterance: the waveform, the student's log-mel spectrogram, teacher posteriors (its own
  20 ms frames), word spans from a CTC forced alignment of the transcript on the teacher's
  posteriors, and per checkpoint the student posteriors, greedy decodes and the per-frame
  distillation term T^2 KL(p_t^T || p_s^T) (teacher pooled to the student frame rate as in
  training, `losses/kl.py`);
- the trajectory basis: PCA of one teacher layer's states (pooled to the student frame rate)
  over `fit_utterances` utterances; the mapped student layer goes into the teacher's space
  through the run's learned KD projection when the run has one for that pair, else through a
  scaled orthogonal Procrustes map fitted per checkpoint on the same frames; both are then
  projected on the same PCA basis (`pca_dims` coordinates kept);
- per checkpoint and frame, the full-dimensional distance between the mapped student state and
  the teacher state, relative to the teacher states' RMS spread;
- per checkpoint, linear CKA between every teacher layer and every student layer on the same
  frames (at most `cka_frames` of them), and the CKA of the mapped pair;
- how faithful the 2D picture is: the correlation of pairwise distances in the first two PCs
  with those in the full space, and the share of the student-teacher gap the 2D view shows.
"""

from __future__ import annotations

import json
import logging
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from distill_jax import text as text_lib
from distill_jax.audio import features as feats_lib
from distill_jax.losses import frame_align
from distill_jax.train import checkpoint as ckpt_lib
from distill_jax.train import runs, splits
from distill_jax.train import teacher as teacher_lib
from distill_jax.viz import align as align_lib
from distill_jax.viz import cka as cka_lib
from distill_jax.viz import projection
from distill_jax.viz.page import SAMPLE_RATE, PageData, Utterance

log = logging.getLogger(__name__)

def run_config(workdir: str, config: ml_collections.ConfigDict | None = None
               ) -> ml_collections.ConfigDict:
  """The run's config (as saved in its latest checkpoint) unless one is given."""
  saved = runs.saved_extra(workdir)
  if config is None:
    config = ml_collections.ConfigDict(saved["config"])
  if not runs.is_distillation(config) or not saved.get("distill"):
    raise ValueError(f"{workdir} is not a distillation run (its checkpoints record no teacher; "
                     "config.distill.teacher is empty): the page compares a student with its "
                     "teacher")
  return config


def choose_steps(steps: list[int], max_checkpoints: int) -> list[int]:
  """All steps, or `max_checkpoints` of them evenly spread (first and last kept)."""
  steps = sorted(steps)
  if max_checkpoints <= 0 or len(steps) <= max_checkpoints:
    return steps
  idx = np.unique(np.round(np.linspace(0, len(steps) - 1, max_checkpoints)).astype(int))
  return [steps[i] for i in idx]


def _log_softmax(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float64)
  m = np.max(x, -1, keepdims=True)
  return x - m - np.log(np.sum(np.exp(x - m), -1, keepdims=True))


def frame_kl(student_logits, teacher_log_probs, temperature: float) -> np.ndarray:
  """Per-frame T^2 KL(p_t^T || p_s^T): [T, V] x 2 -> [T] (the summand of losses.kl.kl_divergence;
  numpy, as the per-utterance shapes vary and would each compile a program)."""
  log_ps = _log_softmax(np.asarray(student_logits) / temperature)
  log_pt = _log_softmax(np.asarray(teacher_log_probs) / temperature)
  pt = np.exp(log_pt)
  return (temperature ** 2 * np.sum(np.where(pt > 0, pt * (log_pt - log_ps), 0.0), -1)
          ).astype(np.float32)


def _greedy_text(log_probs: np.ndarray, tokenizer: text_lib.CharTokenizer) -> str:
  """Best-path decode of [T, V] (the rule of decode/ctc.py's ctc_greedy, on the host)."""
  best = np.argmax(log_probs, -1)
  keep = (best != tokenizer.blank_id) & (best != np.concatenate([[-1], best[:-1]]))
  return tokenizer.decode(best[keep].tolist())


def _padded(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """int16 [S] -> float waveform [1, S'] and paddings, S' rounded up to whole seconds (so a
  handful of shapes compile)."""
  n = len(audio)
  s = max(1, -(-n // SAMPLE_RATE)) * SAMPLE_RATE
  wav = np.zeros((1, s), np.float32)
  wav[0, :n] = audio.astype(np.float32) / 32767.0
  pad = np.ones((1, s), np.float32)
  pad[0, :n] = 0.0
  return wav, pad


def _student_frames(config, r: int, s_out: dict, t_out: dict) -> tuple[int, dict]:
  """Teacher outputs pooled to the student rate; n = frames valid on both sides."""
  ts = s_out["logits"].shape[1]
  t_lp, t_pad = frame_align.align_teacher(t_out.log_probs, t_out.frame_paddings, r, ts)
  t_hid, _ = frame_align.align_hidden(t_out.hidden, t_out.frame_paddings, r, ts)
  valid = (np.asarray(s_out["paddings"][0]) < 0.5) & (np.asarray(t_pad[0]) < 0.5)
  n = int(np.sum(valid))
  if not valid[:n].all():
    raise ValueError("valid frames are not a prefix of the utterance (right-padding expected)")
  return n, dict(log_probs=t_lp[0, :n], hidden=t_hid[:, 0, :n])


def compute_page_data(workdir: str, *, split: str = "test", utterances: int = 5,
                      fit_utterances: int = 20, max_checkpoints: int = 0, pca_dims: int = 8,
                      cka_frames: int = 2000, teacher_layer: int | None = None,
                      student_layer: int | None = None,
                      config: ml_collections.ConfigDict | None = None) -> PageData:
  """See the module docstring. Layers default to the run's deepest KD pair (or the last
  layers of both models when it has none)."""
  config = run_config(workdir, config)
  if split not in config.data or not isinstance(config.data[split], str):
    raise ValueError(f"--split={split!r} is not a manifest entry of the run's config.data "
                     f"({sorted(k for k, v in config.data.items() if isinstance(v, str))})")
  if utterances < 1:
    raise ValueError(f"utterances={utterances} must be >= 1")
  tokenizer = text_lib.CharTokenizer.from_file(workdir)  # saved by the run
  t_cfg = config.copy_and_resolve_references()
  t_cfg.unlock()
  t_cfg.distill.cache = ""  # the page runs the teacher itself
  teacher = teacher_lib.load_teacher(t_cfg, tokenizer)
  r = teacher_lib.frame_ratio(config, teacher.teacher)
  temperature = float(config.distill.temperature)

  ckpt = ckpt_lib.Checkpointer(workdir, read_only=True)
  all_steps = ckpt.all_steps()
  kd_meta = ckpt.restore_extra("latest")["distill"]
  ckpt.close()
  steps = choose_steps(all_steps, max_checkpoints)
  pairs = [tuple(p) for p in kd_meta["layer_pairs"]]
  n_s_layers = int(kd_meta["student_layers"])
  n_t_layers = teacher.teacher.num_hidden_states - 1
  if teacher_layer is None and student_layer is None and pairs:
    student_layer, teacher_layer = pairs[-1]
  teacher_layer = n_t_layers if teacher_layer is None else int(teacher_layer)
  student_layer = n_s_layers if student_layer is None else int(student_layer)
  if not 0 <= teacher_layer <= n_t_layers:
    raise ValueError(f"teacher_layer={teacher_layer}: the teacher has layers 0..{n_t_layers}")
  if not 0 <= student_layer <= n_s_layers:
    raise ValueError(f"student_layer={student_layer}: the student has layers 0..{n_s_layers}")
  proj_name = f"proj_{student_layer}_{teacher_layer}"
  mapping = "kd_projection" if (student_layer, teacher_layer) in pairs else "procrustes"

  n_load = max(utterances, fit_utterances)
  dataset, report = splits.load_split(config, config.data[split], split, tokenizer,
                                    max_utterances=n_load, progress=False)
  if len(dataset) < utterances:
    raise ValueError(f"split {split!r} ({config.data[split]}) has {len(dataset)} usable "
                     f"utterances among its first {n_load}, fewer than utterances="
                     f"{utterances} (skipped: {report.counts()})")
  examples = dataset.examples[:n_load]

  # Teacher: every layer, once per utterance.
  all_layers = tuple(range(n_t_layers + 1))
  t_fn = jax.jit(lambda p, w, m: teacher.teacher.forward(p, w, m, all_layers))
  # Student: one jitted forward, params as an argument.
  model, _, _, _ = runs.restore_student(workdir, steps[-1])
  s_fn = jax.jit(lambda p, w, m: model.apply({"params": p}, w, m, train=False))
  frontend = feats_lib.LogMelConfig.from_config(config.model.frontend)
  mel_fn = jax.jit(lambda w, m: feats_lib.log_mel(w, m, frontend))

  inputs = [_padded(dataset.audio[ex.id]) for ex in examples]
  t_outs = [jax.device_get(t_fn(teacher.params, w, m)) for w, m in inputs]

  per_step = []  # per checkpoint: list over utterances of (n, logits, hidden [Ls+1, n, Ds])
  aligned = None
  projections = {}
  for step in steps:
    _, params, _, _ = runs.restore_student(workdir, step, with_projections=True)
    outs = []
    utt_aligned = []
    for (w, m), t_out in zip(inputs, t_outs):
      s_out = jax.device_get(s_fn(params["student"], w, m))
      n, t_al = _student_frames(config, r, s_out, t_out)
      outs.append((n, s_out["logits"][0, :n], s_out["hidden_states"][:, 0, :n]))
      utt_aligned.append(t_al)
    aligned = utt_aligned
    per_step.append(outs)
    projections[step] = params["projections"].get(proj_name) if mapping == "kd_projection" \
        else None
    log.info("step %d: student run on %d utterances", step, len(inputs))

  # The PCA basis: the teacher layer over the fit utterances, at the student frame rate.
  fit_t = np.concatenate([a["hidden"][teacher_layer] for a in aligned], 0)
  k = int(min(pca_dims, fit_t.shape[0], fit_t.shape[1]))
  pca = projection.fit_pca(fit_t, k)
  pca_mean, pca_comps = np.asarray(pca.mean), np.asarray(pca.components)
  project = lambda h: ((np.asarray(h, np.float32) - pca_mean) @ pca_comps.T).astype(np.float32)
  spread = float(np.sqrt(np.mean(np.sum((fit_t - np.asarray(pca.mean)) ** 2, -1))))

  rng = np.random.default_rng(0)
  total = fit_t.shape[0]
  cka_idx = np.sort(rng.choice(total, size=min(cka_frames, total), replace=False))
  t_layers_fit = [np.concatenate([a["hidden"][l] for a in aligned], 0)[cka_idx]
                  for l in range(n_t_layers + 1)]

  def mapper(step_i: int):
    outs = per_step[step_i]
    src = np.concatenate([o[2][student_layer] for o in outs], 0)
    if mapping == "kd_projection":
      p = projections[steps[step_i]]
      kernel, bias = np.asarray(p["kernel"]), np.asarray(p["bias"])
      return lambda h: np.asarray(h, np.float32) @ kernel + bias
    pr = projection.fit_procrustes(src, fit_t)
    mu_s, mu_t = np.asarray(pr.source_mean), np.asarray(pr.target_mean)
    w, sc = np.asarray(pr.rotation), float(pr.scale)
    return lambda h: (sc * (np.asarray(h, np.float32) - mu_s) @ w + mu_t).astype(np.float32)

  cka_all, mapped_cka, in_plane, mappers = [], [], [], []
  for i in range(len(steps)):
    outs = per_step[i]
    s_layers = [np.concatenate([o[2][l] for o in outs], 0)[cka_idx]
                for l in range(n_s_layers + 1)]
    m = np.asarray(cka_lib.cka_matrix(t_layers_fit, s_layers))
    cka_all.append(m)
    mapped_cka.append(m[teacher_layer, student_layer])
    fmap = mapper(i)
    mappers.append(fmap)
    mapped = fmap(np.concatenate([o[2][student_layer] for o in outs], 0))
    c = project(mapped)
    tot = np.sum(np.var(mapped, 0))
    in_plane.append(float(np.sum(np.var(c[:, :2], 0)) / max(tot, 1e-30)))

  utts = []
  for u, ex in enumerate(examples[:utterances]):
    t_out = t_outs[u]
    nt = int(np.sum(t_out.frame_paddings[0] < 0.5))
    t_lp = t_out.log_probs[0, :nt]
    t_dec = _greedy_text(t_lp, tokenizer)
    labels = [int(x) for x in ex.labels]
    note, words, chars = "", [], []
    hop_t = teacher.teacher.frame_samples / SAMPLE_RATE
    n = aligned[u]["hidden"].shape[1]
    try:
      states, _ = align_lib.forced_align(t_lp, labels, tokenizer.blank_id)
      spans = align_lib.token_spans(states, len(labels))
      words = [(w, a * hop_t, b * hop_t) for w, a, b in align_lib.word_spans(
          labels, spans, tokenizer.word_delim_id, tokenizer.id_to_token)]
      for j in range(n):
        st = states[min(j * r, nt - 1)]
        tok = tokenizer.id_to_token[labels[st // 2]] if st % 2 else ""
        chars.append(" " if tok == "|" else tok)
    except ValueError as e:
      note = f"no forced alignment: {e}"
      chars = [""] * n
    t_coords = project(aligned[u]["hidden"][teacher_layer])
    s_probs, s_decs, s_coords, kls, dists = [], [], [], [], []
    t_al = aligned[u]
    for i in range(len(steps)):
      n_i, logits, hidden = per_step[i][u]
      lp = _log_softmax(logits)
      s_decs.append(_greedy_text(lp, tokenizer))
      s_probs.append(np.exp(lp).astype(np.float32))
      mapped = mappers[i](hidden[student_layer])
      s_coords.append(project(mapped))
      kls.append(frame_kl(logits, t_al["log_probs"], temperature))
      dists.append(np.linalg.norm(mapped - t_al["hidden"][teacher_layer], axis=-1) / spread)
    w, m = inputs[u]
    spec = np.asarray(mel_fn(jnp.asarray(w), jnp.asarray(m))[0][0])
    nf = frontend.num_frames(len(dataset.audio[ex.id]))
    utts.append(Utterance(
        id=ex.id, text=ex.text, audio=np.asarray(dataset.audio[ex.id]), spectrogram=spec[:nf],
        teacher_probs=np.exp(t_lp), teacher_decode=t_dec, words=words, frame_chars=chars,
        teacher_coords=t_coords, student_probs=np.stack(s_probs), student_decodes=s_decs,
        student_coords=np.stack(s_coords), kl=np.stack(kls), distance=np.stack(dists),
        align_note=note))

  fidelity = projection_fidelity(utts, rng)
  meta = dict(
      workdir=os.path.abspath(workdir), run_name=config.get("name", ""), split=split,
      teacher=os.path.abspath(teacher.path), teacher_layers=n_t_layers,
      teacher_dim=teacher.teacher.hidden_size, student_layers=n_s_layers,
      student_dim=int(per_step[-1][0][2].shape[-1]), student_encoder=config.model.encoder,
      teacher_layer=teacher_layer, student_layer=student_layer, mapping=mapping,
      kd_pairs=[list(p) for p in pairs], frame_ratio=r, temperature=temperature,
      teacher_hop_s=hop_t, student_hop_s=hop_t * r, spec_hop_s=frontend.hop_length / SAMPLE_RATE,
      pca_frames=int(total), pca_utterances=len(examples), cka_frames=int(len(cka_idx)),
      teacher_spread=spread, blank_id=tokenizer.blank_id, **fidelity,
      kd_weights=dict(alpha=config.distill.alpha, beta=config.distill.beta,
                      gamma=config.distill.gamma),
      dev_wer=_dev_wer(workdir, steps))
  vocab = [tokenizer.id_to_token[i] for i in range(tokenizer.vocab_size)]
  return PageData(meta=meta, steps=[int(s) for s in steps], vocab=vocab,
                  explained_variance_ratio=np.asarray(pca.explained_variance_ratio),
                  cka=np.stack(cka_all), mapped_cka=np.asarray(mapped_cka),
                  student_variance_in_plane=np.asarray(in_plane), utterances=utts)


def projection_fidelity(utts: list[Utterance], rng: np.random.Generator,
                        pairs: int = 4000) -> dict:
  """How much a 2D view can be trusted, on the last checkpoint's points of all utterances.

  distance_correlation: Pearson correlation between pairwise distances in PC1-2 and in all
  kept PCs (teacher and student points pooled); gap_in_plane: mean student-teacher distance
  in PC1-2 over the same in all kept PCs (1 = the whole gap is visible in the plane).
  """
  pts = np.concatenate([np.concatenate([u.teacher_coords, u.student_coords[-1]]) for u in utts])
  i, j = rng.integers(0, len(pts), pairs), rng.integers(0, len(pts), pairs)
  full = np.linalg.norm(pts[i] - pts[j], axis=-1)
  flat = np.linalg.norm(pts[i, :2] - pts[j, :2], axis=-1)
  corr = float(np.corrcoef(full, flat)[0, 1]) if np.std(full) > 0 and np.std(flat) > 0 else 0.0
  gap = lambda d: np.mean(np.concatenate(
      [np.linalg.norm(u.student_coords[-1][:, :d] - u.teacher_coords[:, :d], axis=-1)
       for u in utts]))
  g_full = gap(utts[0].teacher_coords.shape[1])
  return dict(distance_correlation=corr, gap_in_plane=float(gap(2) / max(g_full, 1e-30)),
              pca_dims=int(utts[0].teacher_coords.shape[1]))


def _dev_wer(workdir: str, steps: list[int]) -> dict:
  """dev WER logged at the given steps (from metrics.jsonl), when there is one."""
  path = os.path.join(workdir, "metrics.jsonl")
  out = {}
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        row = json.loads(line)
        if "dev/wer" in row and int(row.get("step", -1)) in steps:
          out[str(int(row["step"]))] = float(row["dev/wer"])
  return out
