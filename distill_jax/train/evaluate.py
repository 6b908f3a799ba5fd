"""Evaluation: decode a dataset with a student, score WER/CER with jiwer, time it.

Writes `hypotheses.tsv` (id, reference, hypothesis, per-utterance WER) and `summary.json`.

Decoders (`config.eval.decoder`): 'greedy' (best path, jitted over the batch), 'beam' (CTC
prefix beam search, `config.eval.beam_size`), 'beam_lm' (beam search with shallow fusion of the
word n-gram LM `config.eval.lm` through pyctcdecode + kenlm; weights `lm_alpha`, `lm_beta`,
tuned on dev with `tune_lm_weights`). Attention and transducer students decode with their own
greedy or beam search ('greedy' | 'beam', decode/attention.py, decode/transducer.py) inside the
jitted forward step. The real-time factor counts the network and the decoder.
"""

from __future__ import annotations

import copy
import json
import os
import time
from typing import Any, Callable

import jax
import jiwer
import numpy as np

from distill_jax import text as text_lib
from distill_jax.data import pipeline
from distill_jax.decode import ctc as ctc_decode
from distill_jax.train import checkpoint as ckpt_lib


DECODERS = ("greedy", "beam", "beam_lm")

# An utterance decoder: log-probabilities of its valid frames [T, V] -> normalized text.
UtteranceDecoder = Callable[[np.ndarray], str]


def make_decoder(eval_cfg, tokenizer: text_lib.CharTokenizer) -> UtteranceDecoder | None:
  """The decoder `eval_cfg.decoder` names; None for greedy (decoded batched under jit)."""
  kind = eval_cfg.decoder
  if kind not in DECODERS:
    raise ValueError(f"config.eval.decoder={kind!r} is not one of {DECODERS}")
  if kind == "greedy":
    return None
  if kind == "beam":
    def beam(log_probs: np.ndarray) -> str:
      best = ctc_decode.ctc_prefix_beam_search(log_probs, eval_cfg.beam_size,
                                               blank_id=tokenizer.blank_id)[0][0]
      return tokenizer.decode(best)
    return beam
  if not eval_cfg.lm or not os.path.exists(eval_cfg.lm):
    raise FileNotFoundError(
        f"config.eval.decoder='beam_lm' needs config.eval.lm, an ARPA file; got "
        f"{eval_cfg.lm!r} (make one with python -m launch.make_lm)")
  labels = [tokenizer.id_to_token[i] for i in range(tokenizer.vocab_size)]
  lm_decoder = ctc_decode.build_lm_decoder(labels, eval_cfg.lm, blank_id=tokenizer.blank_id,
                                           alpha=eval_cfg.lm_alpha, beta=eval_cfg.lm_beta)

  def beam_lm(log_probs: np.ndarray) -> str:
    text = ctc_decode.ctc_beam_search_lm(log_probs, lm_decoder, eval_cfg.beam_size)[0][0]
    return " ".join(text.split())
  return beam_lm


def decode_dataset(forward: Callable, params: Any, dataset: pipeline.AsrDataset,
                   tokenizer: text_lib.CharTokenizer,
                   decoder: UtteranceDecoder | None = None,
                   keep_log_probs: bool = False,
                   warm_up: bool = False) -> tuple[dict[str, str], float, dict]:
  """Decodes every example.

  With `warm_up`, the first batch of each padded shape runs once untimed first (XLA compiles
  it), so the seconds exclude compilation.

  Returns:
    ({id: hypothesis}, seconds spent in the network and the decoder,
     {id: [T, V] float32 log-probabilities of the valid frames} if keep_log_probs else {}).
  """
  hyps, seconds, kept = {}, 0.0, {}
  warmed = set()
  for batch in pipeline.eval_batches(dataset):
    ids = batch.pop("ids")
    if warm_up and batch["waveform"].shape not in warmed:
      warmed.add(batch["waveform"].shape)
      jax.block_until_ready(forward(params, batch))
    t0 = time.perf_counter()
    out = forward(params, batch)
    if "tokens" in out:  # attention / transducer students decode inside the forward step
      tokens, lengths = np.asarray(out["tokens"]), np.asarray(out["lengths"])
      for r, uid in enumerate(ids):
        if uid:
          hyps[uid] = tokenizer.decode(tokens[r, :lengths[r]])
      seconds += time.perf_counter() - t0
      continue
    if decoder is None:
      tokens, lengths = ctc_decode.ctc_greedy(out["log_probs"], out["paddings"],
                                              tokenizer.blank_id)
      tokens, lengths = np.asarray(tokens), np.asarray(lengths)
    log_probs, frames = np.asarray(out["log_probs"]), np.sum(np.asarray(out["paddings"]) < 0.5, 1)
    for r, uid in enumerate(ids):
      if not uid:
        continue
      if decoder is None:
        hyps[uid] = tokenizer.decode(tokens[r, :lengths[r]])
      else:
        hyps[uid] = decoder(log_probs[r, :frames[r]])
      if keep_log_probs:
        kept[uid] = log_probs[r, :frames[r]]
    seconds += time.perf_counter() - t0
  return hyps, seconds, kept


def score(refs: list[str], hyps: list[str]) -> dict[str, float]:
  """Corpus-level WER and CER (jiwer), on normalized text."""
  return dict(wer=float(jiwer.wer(refs, hyps)), cer=float(jiwer.cer(refs, hyps)))


def evaluate(forward: Callable, params: Any, dataset: pipeline.AsrDataset,
             tokenizer: text_lib.CharTokenizer, out_dir: str | None = None,
             name: str = "eval", decoder: UtteranceDecoder | None = None) -> dict[str, Any]:
  """Decodes, scores and (optionally) writes hypotheses.tsv and summary.json under out_dir.

  The result's `rtf` is this pass's seconds per audio second on all the process's CPUs,
  compilation of new shapes included; `real_time_factor` (launch/rtf.py) is the clean figure.
  With `engine` / `speaker` fields in the manifest, `by_engine` / `by_speaker` hold WER and CER
  per group.
  """
  hyps, seconds, _ = decode_dataset(forward, params, dataset, tokenizer, decoder)
  refs = [ex.text for ex in dataset.examples]
  hyp_list = [hyps[ex.id] for ex in dataset.examples]
  result = score(refs, hyp_list)
  for field in ("engine", "speaker"):  # breakdowns, when the manifest says
    groups: dict[str, list[int]] = {}
    for i, ex in enumerate(dataset.examples):
      if getattr(ex, field):
        groups.setdefault(getattr(ex, field), []).append(i)
    if len(groups) > 1:
      result[f"by_{field}"] = {
          g: score([refs[i] for i in idx], [hyp_list[i] for i in idx]) | {"utterances": len(idx)}
          for g, idx in sorted(groups.items())}
  audio_seconds = dataset.total_seconds
  result.update(name=name, utterances=len(dataset), audio_hours=audio_seconds / 3600,
                rtf=seconds / max(audio_seconds, 1e-9), devices=jax.device_count())
  if out_dir:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "hypotheses.tsv"), "w", encoding="utf-8") as f:
      f.write("id\treference\thypothesis\twer\n")
      for ex, h in zip(dataset.examples, hyp_list):
        f.write(f"{ex.id}\t{ex.text}\t{h}\t{jiwer.wer(ex.text, h):.4f}\n")
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
      json.dump(result, f, indent=2)
  return result


def real_time_factor(forward: Callable, params: Any, dataset: pipeline.AsrDataset,
                     tokenizer: text_lib.CharTokenizer,
                     decoder: UtteranceDecoder | None = None) -> dict[str, Any]:
  """Seconds of compute per second of audio over `dataset`, compilation excluded.

  One pass over the dataset: the first batch of each padded shape runs once untimed (XLA
  compiles it), every batch is then decoded and timed (network + decoder, as in `evaluate`). `cpus` is how many CPUs this
  process may run on (`launch/rtf.py` pins it; the demo reports one thread).
  """
  _, seconds, _ = decode_dataset(forward, params, dataset, tokenizer, decoder, warm_up=True)
  audio = dataset.total_seconds
  return dict(rtf=seconds / max(audio, 1e-9), seconds=seconds, audio_seconds=audio,
              utterances=len(dataset), cpus=len(os.sched_getaffinity(0)),
              devices=jax.device_count(), platform=jax.default_backend())


def measure_rtf(config, *, split: str = "test", workdir: str | None = None,
                which: str = "best", teacher_dir: str | None = None) -> dict[str, Any]:
  """`real_time_factor` of a student checkpoint (workdir) or a converted teacher, greedy."""
  from distill_jax.train import loop  # the trainer imports this module
  if config.eval.decoder != "greedy":
    config = copy.deepcopy(config)
    config.eval.decoder = "greedy"
  if teacher_dir:
    forward, params, tokenizer, _ = teacher_forward(teacher_dir)
    what = dict(model="teacher", path=teacher_dir)
  else:
    forward, params, tokenizer, step, _ = checkpoint_forward(config, workdir, which)
    what = dict(model="student", path=workdir, step=step)
  dataset, _ = loop.load_split(config, config.data[split], split, tokenizer, progress=False)
  return what | dict(split=split) | real_time_factor(forward, params, dataset, tokenizer)


def _targets(config, splits: list[str] | None, manifest: str | None,
             name: str | None) -> dict[str, str]:
  """{result name: manifest path}: one manifest, or config.data entries (default eval.splits)."""
  if manifest:
    return {name or os.path.splitext(os.path.basename(manifest))[0]: manifest}
  names = splits or list(config.eval.splits)
  unknown = [s for s in names if s not in config.data]
  if unknown:
    raise ValueError(f"split(s) {unknown} are not entries of config.data")
  return {s: config.data[s] for s in names}


def _evaluate_targets(config, forward: Callable, params: Any, tokenizer, decoder,
                      targets: dict[str, str], out_root: str, tag: str) -> dict[str, dict]:
  from distill_jax.train import loop  # the trainer imports this module
  suffix = "" if config.eval.decoder == "greedy" else f"_{config.eval.decoder}"
  results = {}
  for split, path in targets.items():
    dataset, report = loop.load_split(config, path, split, tokenizer)
    res = evaluate(forward, params, dataset, tokenizer,
                   os.path.join(out_root, "eval", f"{split}_{tag}{suffix}"), name=split,
                   decoder=decoder)
    res.update(skipped=report.counts(), decoder=config.eval.decoder)
    if config.eval.decoder == "beam_lm":
      res.update(lm=config.eval.lm, lm_alpha=config.eval.lm_alpha, lm_beta=config.eval.lm_beta)
    results[split] = res
  return results


def checkpoint_forward(config, workdir: str, which: str = "best"):
  """(jitted forward, params, tokenizer, step, utterance decoder) of a workdir's checkpoint."""
  from distill_jax.train import loop, steps  # the trainer imports this module
  model, params, tokenizer, step = loop.restore_student(config, workdir, which)
  if config.model.head == "ctc":
    return (jax.jit(steps.make_forward_step(model)), params, tokenizer, step,
            make_decoder(config.eval, tokenizer))
  # The head's own greedy / beam search runs inside the jitted forward step.
  return jax.jit(steps.make_forward_step(model, config.eval)), params, tokenizer, step, None


def teacher_forward(teacher_dir: str):
  """(jitted forward, params, tokenizer, wav2vec2 config) of a converted teacher folder.

  forward(params, batch) -> dict(log_probs [B, Tt, V], paddings [B, Tt]): the frozen
  teacher's CTC posteriors, as the distillation step sees them (waveform normalized when the
  teacher's processor asks for it).
  """
  from distill_jax.convert import hf_wav2vec2  # pylint: disable=import-outside-toplevel
  from distill_jax.models import wav2vec2 as w2v  # pylint: disable=import-outside-toplevel
  t_config, params, tokenizer, _ = hf_wav2vec2.load_teacher(teacher_dir)
  fn = w2v.make_teacher_fn(w2v.Wav2Vec2ForCTC(t_config))

  def fwd(p, batch):
    out = fn(p, batch["waveform"], batch["wave_paddings"])
    return dict(log_probs=out["log_probs"], paddings=out["paddings"])
  return jax.jit(fwd), params, tokenizer, t_config


def evaluate_checkpoint(config, workdir: str, which: str = "best", *,
                        splits: list[str] | None = None, manifest: str | None = None,
                        name: str | None = None) -> dict[str, dict]:
  """Restores a checkpoint and evaluates config splits (or one manifest) with it.

  Results (and hypotheses) go to workdir/eval/<split>_step<step>[_<decoder>]/.
  """
  forward, params, tokenizer, step, decoder = checkpoint_forward(config, workdir, which)
  results = _evaluate_targets(config, forward, params, tokenizer, decoder,
                              _targets(config, splits, manifest, name), workdir,
                              ckpt_lib.tag(which, step))
  for res in results.values():
    res.update(step=step, checkpoint=str(which))
  return results


def evaluate_teacher(config, teacher_dir: str, *, splits: list[str] | None = None,
                     manifest: str | None = None, name: str | None = None,
                     out_root: str | None = None) -> dict[str, dict]:
  """Evaluates a converted teacher (`launch.convert_teacher` output) like a student checkpoint.

  Data and decoding come from `config` (`config.data`, `config.eval`); the teacher's own
  tokenizer decodes (its vocabulary must be the one the references are written in). Results
  go to `out_root` (default: the teacher folder)/eval/<split>_teacher[_<decoder>]/.
  """
  forward, params, tokenizer, _ = teacher_forward(teacher_dir)
  return _evaluate_targets(config, forward, params, tokenizer,
                           make_decoder(config.eval, tokenizer),
                           _targets(config, splits, manifest, name), out_root or teacher_dir,
                           "teacher")


def tune_lm_weights(config, workdir: str, which: str = "best", split: str = "dev",
                    alphas=(0.3, 0.5, 0.7, 1.0), betas=(0.0, 1.0, 2.0, 3.0)) -> dict[str, Any]:
  """Grid search of LM weight alpha and word bonus beta for 'beam_lm' on one split.

  The network runs once; each grid point only decodes. Returns the grid (alpha, beta, WER,
  CER) and the best point by WER.
  """
  from distill_jax.train import loop  # the trainer imports this module
  if config.model.head != "ctc":
    raise ValueError(f"config.model.head={config.model.head!r}: LM weights are tuned for CTC "
                     "students (beam_lm)")
  forward, params, tokenizer, step, _ = checkpoint_forward(config, workdir, which)
  dataset, _ = loop.load_split(config, config.data[split], split, tokenizer)
  _, _, log_probs = decode_dataset(forward, params, dataset, tokenizer, keep_log_probs=True)
  refs = [ex.text for ex in dataset.examples]
  grid = []
  eval_cfg = copy.deepcopy(config.eval)
  for alpha in alphas:
    for beta in betas:
      eval_cfg.lm_alpha, eval_cfg.lm_beta = float(alpha), float(beta)
      decoder = make_decoder(eval_cfg, tokenizer)
      hyps = [decoder(log_probs[ex.id]) for ex in dataset.examples]
      grid.append(dict(alpha=float(alpha), beta=float(beta), **score(refs, hyps)))
  best = min(grid, key=lambda g: g["wer"])
  return dict(step=step, split=split, grid=grid, best=best)
