"""Personalization of a trained denoiser for one listener's situation, and what it costs elsewhere.

The situation: one talker (`speaker` of the clean manifest) in one kind of noise (the noise files
whose path matches `noise_regex`). The talker's utterances and the matching noise files are each
split in two, in reading order: the first part adapts (`enhance/personalize.py`), the last
(`eval_utterances` utterances, the last noise file) evaluates. The cost is measured on the rest
of the test conditions: every other speaker with every non-matching noise file. Both evaluations
run the same seeded mixtures before and after (SI-SDR, ESTOI, PESQ-WB per SNR). Writes
OUT/adapters (the adapters alone, tied to the base's fingerprint) and OUT/results.{json,md}.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from typing import Any, Sequence

import jax
import numpy as np

from distill_jax.adapters import checkpoint as adapter_ckpt
from distill_jax.adapters import lora
from distill_jax.audio import io as audio_io
from distill_jax.data import manifest as manifest_lib
from distill_jax.data import mixing
from distill_jax.enhance import evaluate as evaluate_lib
from distill_jax.enhance import inference, personalize
from distill_jax.enhance import loop as loop_lib
from distill_jax.enhance import model as model_lib

log = logging.getLogger(__name__)


def _split_situation(clean_manifest: str, speaker: str, noise_list: str, noise_regex: str,
                     eval_utterances: int, sample_rate: int) -> dict[str, Any]:
  utts = manifest_lib.read_manifest(clean_manifest)
  mine = [u for u in utts if u.speaker == speaker]
  if len(mine) <= eval_utterances:
    raise ValueError(f"{clean_manifest}: speaker {speaker!r} has {len(mine)} utterance(s); "
                     f"need more than eval_utterances={eval_utterances}")
  others = [u for u in utts if u.speaker != speaker]
  noises = loop_lib.load_noise(noise_list, sample_rate)
  paths = mixing.read_noise_list(noise_list)
  pat = re.compile(noise_regex)
  match = [i for i, p in enumerate(paths) if pat.search(os.path.basename(p))]
  if len(match) < 2:
    raise ValueError(f"{noise_list}: {len(match)} file(s) match {noise_regex!r}; need at least "
                     "2 (adaptation and evaluation)")
  rest = [i for i in range(len(paths)) if i not in match]
  load = lambda us: [audio_io.load_audio(u.path, sample_rate) for u in us]
  return dict(
      adapt_clean=load(mine[:-eval_utterances]), eval_clean=load(mine[-eval_utterances:]),
      adapt_noise=[noises[i] for i in match[:-1]], eval_noise=[noises[match[-1]]],
      other_clean=load(others), other_noise=[noises[i] for i in rest],
      files=dict(adapt_utterances=[u.id for u in mine[:-eval_utterances]],
                 eval_utterances=[u.id for u in mine[-eval_utterances:]],
                 adapt_noise=[paths[i] for i in match[:-1]], eval_noise=[paths[match[-1]]],
                 other_speakers=len({u.speaker for u in others}),
                 other_noise=[paths[i] for i in rest]))


def _table(rows: dict[str, dict[str, float]], snrs: Sequence[float]) -> list[str]:
  out = ["| set | model | SNR | PESQ-WB | ESTOI | SI-SDR (dB) |", "|---|---|---|---|---|---|"]
  for name, r in rows.items():
    s, m = name.split("/")
    for snr in [*snrs, "all"]:
      key = f"snr{snr:g}" if snr != "all" else "all"
      out.append(f"| {s} | {m} | {snr if snr == 'all' else f'{snr:g} dB'} | "
                 f"{r[key + '/pesq']:.2f} | {r[key + '/estoi']:.3f} | {r[key + '/sisdr']:.2f} |")
  return out


def run(base_run: str, out: str, *, clean_manifest: str, speaker: str, noise_list: str,
        noise_regex: str, checkpoint: str = "best", eval_utterances: int = 5, steps: int = 150,
        batch_size: int = 8, segment_seconds: float = 2.0, rank: int = 4, alpha: float = 8.0,
        lr: float = 1e-3, snrs: Sequence[float] = (-5.0, 0.0, 5.0, 10.0, 15.0),
        per_snr: int = 6, eval_seconds: float = 4.0, seed: int = 0) -> dict[str, Any]:
  if os.path.exists(os.path.join(out, "adapters")):
    raise FileExistsError(f"{out}/adapters exists: choose another --out")
  os.makedirs(out, exist_ok=True)
  model, base, config = inference.load_run(base_run, checkpoint)
  sr, hop = config.model.sample_rate, config.model.hop
  data = _split_situation(clean_manifest, speaker, noise_list, noise_regex, eval_utterances, sr)
  length = int(eval_seconds * sr) // hop * hop
  sets = dict(
      situation=evaluate_lib.dev_set(seed + 1, data["eval_clean"], data["eval_noise"], snrs,
                                     per_snr, length, config.data.speech_level),
      others=evaluate_lib.dev_set(seed + 2, data["other_clean"], data["other_noise"], snrs,
                                  per_snr, length, config.data.speech_level))
  fwd = jax.jit(lambda p, x: model_lib.enhance(model, p, x))

  def evaluate(params, tag):
    return {f"{name}/{tag}": evaluate_lib.evaluate(lambda x: np.asarray(fwd(params, x)), s, sr,
                                                   with_pesq=True)
            for name, s in sets.items()}

  t0 = time.time()
  rows = evaluate(base, "base")
  segment = int(segment_seconds * sr) // hop * hop

  def progress(step, row):
    if step % 25 == 0 or step == steps:
      log.info("step %d/%d: loss %.4f, SI-SDR %.2f dB (%.1f min)", step, steps, row["loss"],
               row["sisdr"], (time.time() - t0) / 60)

  adapters, train_log = personalize.personalize(
      model, base, data["adapt_clean"], data["adapt_noise"], steps=steps,
      batch_size=batch_size, segment=segment, seed=seed, rank=rank, alpha=alpha, lr=lr,
      resolutions=config.loss.resolutions, stft_weight=config.loss.stft_weight,
      sisdr_weight=config.loss.sisdr_weight, snr_range=tuple(config.data.snr_range),
      level=config.data.speech_level, progress=progress)
  rows.update(evaluate(lora.merge_lora(base, adapters), "adapted"))
  rows = {k: rows[k] for k in ("situation/base", "situation/adapted", "others/base",
                               "others/adapted")}
  n_adapter = sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(adapters))
  n_base = sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(base))
  adapter_ckpt.save_adapters(os.path.join(out, "adapters"), adapters, base,
                             patterns=list(personalize.DEFAULT_PATTERNS),
                             metadata=dict(base_run=os.path.abspath(base_run),
                                           checkpoint=checkpoint, steps=steps))
  seconds = sum(len(x) for x in data["adapt_clean"]) / sr
  noise_s = sum(len(x) for x in data["adapt_noise"]) / sr
  gain = {k: rows["situation/adapted"][f"all/{k}"] - rows["situation/base"][f"all/{k}"]
          for k in ("pesq", "estoi", "sisdr")}
  cost = {k: rows["others/adapted"][f"all/{k}"] - rows["others/base"][f"all/{k}"]
          for k in ("pesq", "estoi", "sisdr")}
  result = dict(base_run=base_run, checkpoint=checkpoint, speaker=speaker,
                noise_regex=noise_regex, adapt_speech_seconds=seconds,
                adapt_noise_seconds=noise_s, steps=steps, rank=rank, alpha=alpha, lr=lr,
                adapter_params=n_adapter, base_params=n_base, files=data["files"], rows=rows,
                gain=gain, cost=cost, train_log=train_log, minutes=(time.time() - t0) / 60)
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump(result, f, indent=2)
  md = [f"# Denoiser personalization: speaker {speaker}, noise /{noise_regex}/", "",
        f"Adapted on {seconds:.0f} s of the talker and {noise_s:.0f} s of the noise, {steps} "
        f"steps, LoRA rank {rank} ({n_adapter:,} adapter params on a {n_base:,}-param base).",
        f"Gain on the situation (all SNRs): PESQ {gain['pesq']:+.2f}, ESTOI "
        f"{gain['estoi']:+.3f}, SI-SDR {gain['sisdr']:+.2f} dB; cost elsewhere: PESQ "
        f"{cost['pesq']:+.2f}, ESTOI {cost['estoi']:+.3f}, SI-SDR {cost['sisdr']:+.2f} dB.", ""]
  md += _table(rows, snrs)
  with open(os.path.join(out, "results.md"), "w") as f:
    f.write("\n".join(md) + "\n")
  log.info("\n%s", "\n".join(md))
  return result
