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

  The result's `eval_rtf` is this pass's seconds per audio second on all the process's CPUs,
  compilation of new shapes included; `real_time_factor` (launch/rtf.py: compilation excluded,
  pinned CPUs) is the figure to report.
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
                eval_rtf=seconds / max(audio_seconds, 1e-9), devices=jax.device_count())
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
  compiles it), every batch is then decoded and timed (network + decoder, as in `evaluate`).
  `cpus` is how many CPUs this process may run on (`launch/rtf.py` pins it; the demo reports
  one thread).
  """
  _, seconds, _ = decode_dataset(forward, params, dataset, tokenizer, decoder, warm_up=True)
  audio = dataset.total_seconds
  return dict(rtf=seconds / max(audio, 1e-9), seconds=seconds, audio_seconds=audio,
              utterances=len(dataset), cpus=len(os.sched_getaffinity(0)),
              devices=jax.device_count(), platform=jax.default_backend())
