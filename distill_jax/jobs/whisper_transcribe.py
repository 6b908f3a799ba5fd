"""Whisper's transcripts of a manifest as pseudo-labels: sequence-level KD for a CTC student.

    transcribe_manifest("teachers/whisper-tiny.en-hf", "datasets/x/train.jsonl",
                        "datasets/x/train_whisper.jsonl", max_wer=0.1)

Decodes every utterance of a manifest with a Whisper Hugging Face folder (`models/whisper.py`,
`decode/whisper.py`: jitted greedy or beam search with the KV cache), normalizes the text to
the project's convention (`text/whisper.py`), scores it against the manifest's own text where
there is one, and writes a pseudo-labelled manifest whose `text` is Whisper's (format, WER
filter and report: `data/pseudo_labels.py`). Train on it as on any manifest
(`config.data.train`), with `config.distill.hard_labels='whisper'` when distilling, which
checks that the manifest is one of these.

Batching: utterances sorted by length (longest first), `batch_size` rows per batch, every
batch padded to the same window (`window_seconds`, default the model's own, 30 s for the
released models) so one program is compiled; the last batch is filled with silent rows. The
audio of the next batch is read while the current one decodes. Progress: a tqdm bar with an
ETA over utterances.

Interruption: each finished batch is appended to OUT.partial and fsync'ed; a rerun with the
same settings decodes only what is missing (settings that differ are an error naming them,
`overwrite=True` starts over). `max_wer` is not a decoding setting: rerunning with another
threshold re-filters without decoding again (OUT.partial is kept next to OUT for that).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from distill_jax import text as text_lib
from distill_jax.audio import io as audio_io
from distill_jax.audio import whisper_features
from distill_jax.convert import hf_whisper
from distill_jax.data import manifest as manifest_lib
from distill_jax.data import pseudo_labels as pl
from distill_jax.decode import whisper as dec
from distill_jax.models import teacher as teacher_lib
from distill_jax.models import whisper as whisper_lib
from distill_jax.text import whisper as text_whisper

log = logging.getLogger(__name__)
SAMPLE_RATE = whisper_features.SAMPLE_RATE


def load_tokenizer(folder: str) -> tuple[Callable[[list[int]], str], Callable[[str], list[int]]]:
  """(decode ids -> text without special tokens, encode text -> ids) from the folder's
  `tokenizer.json` (the `tokenizers` package, installed with transformers)."""
  path = os.path.join(folder, "tokenizer.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: the Whisper folder has no tokenizer.json (launch."
                            "import_whisper writes one); it is needed to turn ids into text")
  try:
    import tokenizers  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError("reading tokenizer.json needs the `tokenizers` package (pip install -r "
                      "requirements-reference.txt)") from e
  tok = tokenizers.Tokenizer.from_file(path)
  return (lambda ids: tok.decode(list(ids), skip_special_tokens=True),
          lambda s: tok.encode(s, add_special_tokens=False).ids)


@functools.partial(jax.jit, static_argnames=("num_mels", "window"))
def _features(waveform, paddings, num_mels: int, window: int):
  return whisper_features.log_mel_spectrogram(waveform, paddings, num_mels=num_mels,
                                              num_samples=window)[0]


def _read(utt: manifest_lib.Utterance, window: int) -> tuple[np.ndarray | None, str, str]:
  """(samples, error, detail) of one utterance (samples None on error)."""
  try:
    wav = audio_io.load_audio(utt.path, SAMPLE_RATE)
  except (audio_io.AudioError, OSError) as e:
    return None, "audio", str(e)
  if len(wav) > window:
    return None, "too_long", (f"{len(wav) / SAMPLE_RATE:.2f} s > the decoding window of "
                              f"{window / SAMPLE_RATE:.2f} s")
  return wav, "", ""


def transcribe_manifest(whisper_dir: str, manifest_path: str, out_path: str, *,
                        max_wer: float | None = 0.1, batch_size: int = 8, beam_size: int = 1,
                        language: str | None = None, window_seconds: float = 0.0,
                        max_new_tokens: int | None = None, text_language: str = "en",
                        detokenize: Callable[[Sequence[int]], str] | None = None,
                        overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
  """Decodes `manifest_path` with Whisper and writes the pseudo-labelled manifest `out_path`.

  Args:
    whisper_dir: a transformers Whisper folder (config.json, model.safetensors,
      generation_config.json, tokenizer.json).
    manifest_path: the input manifest (its text, when not empty, is the reference).
    out_path: the output manifest (also OUT.partial and OUT.report.json).
    max_wer: drop utterances whose WER against their reference exceeds this (None: no filter).
    batch_size: rows per decoding batch.
    beam_size: 1 = greedy search, K > 1 = beam search.
    language: for a multilingual model (default English); English-only models take None.
    window_seconds: the decoding window (0: the model's, 30 s for the released checkpoints;
      shorter is faster but a window Whisper was not trained on); longer audio is dropped
      ('too_long').
    max_new_tokens: at most this many tokens per utterance (default `decode_settings`').
    text_language: language of the normalization (`text.normalize`) of the references.
    detokenize: ids -> text (default: the folder's tokenizer.json).
    overwrite: discard an OUT.partial made with other settings instead of failing.
    progress: the tqdm bar.

  Returns:
    the report (`data/pseudo_labels.write_outputs`) plus decoded (this call), resumed (read
    from OUT.partial), seconds.
  """
  start = time.time()
  if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"batch_size={batch_size!r}: must be a positive integer")
  config, params = hf_whisper.load_hf_folder(whisper_dir)
  gen = hf_whisper.read_generation_config(whisper_dir)
  encode = None
  if detokenize is None:
    detokenize, encode = load_tokenizer(whisper_dir)
  listed = gen.get("suppress_tokens", config.suppress_tokens) or ()
  non_speech = dec.non_speech_token_ids(encode) if encode and -1 in listed else None
  settings = dec.decode_settings(config, gen, language=language, beam_size=beam_size,
                                 max_new_tokens=max_new_tokens, non_speech_ids=non_speech)
  full = config.num_frames * whisper_features.HOP_LENGTH
  window = int(round(window_seconds * SAMPLE_RATE)) if window_seconds else full
  if not whisper_features.HOP_LENGTH * 2 <= window <= full:
    raise ValueError(f"window_seconds={window_seconds}: must be 0 (the model's window) or "
                     f"at most {full / SAMPLE_RATE:.2f} s")
  window -= window % whisper_features.HOP_LENGTH
  header = dict(whisper_dir=os.path.abspath(whisper_dir),
                whisper_fingerprint=teacher_lib.params_fingerprint(params),
                manifest=os.path.abspath(manifest_path), prompt=list(settings.prompt),
                beam_size=beam_size, max_new_tokens=settings.max_new_tokens,
                window_samples=window, text_language=text_language)

  utts = manifest_lib.read_manifest(manifest_path)
  partial = out_path + pl.PARTIAL_SUFFIX
  if overwrite and os.path.exists(partial):
    try:
      pl.read_partial(partial, header)
    except ValueError:
      os.remove(partial)
  done = pl.read_partial(partial, header)
  wanted = {u.id for u in utts}
  resumed = sum(1 for uid in done if uid in wanted)
  todo = sorted((u for u in utts if u.id not in done),
                key=lambda u: (-u.duration, u.id))  # longest first: memory trouble shows early
  writer = pl.PartialWriter(partial, header)
  model = whisper_lib.WhisperForConditionalGeneration(config)
  params = jax.device_put(params)
  allow_shorter = window < full
  bar = tqdm.tqdm(total=len(todo), disable=not progress, desc="whisper transcribe", unit="utt",
                  dynamic_ncols=True)

  def load(batch):
    wave = np.zeros((batch_size, window), np.float32)
    pad = np.ones((batch_size, window), np.float32)
    failed = []
    rows = []
    for utt in batch:
      samples, err, detail = _read(utt, window)
      if samples is None:
        failed.append(pl.failed_label(utt, err, detail))
        continue
      r = len(rows)
      wave[r, :len(samples)] = samples
      pad[r, :len(samples)] = 0.0
      rows.append(utt)
    return wave, pad, rows, failed

  def dispatch(loaded):
    wave, pad, rows, failed = loaded
    if not rows:
      return None, rows, failed
    feats = _features(jnp.asarray(wave), jnp.asarray(pad), config.num_mel_bins, window)
    return dec.generate(model, params, feats, settings, allow_shorter=allow_shorter), rows, failed

  def finish(out, rows, failed):
    labels = list(failed)
    if rows:
      for utt, ids in zip(rows, dec.token_lists(out)):
        raw = detokenize(ids)
        try:
          norm = text_whisper.normalize_whisper(raw)
        except text_lib.TextError as e:
          labels.append(pl.make_label(utt, raw, None, error="text", detail=str(e)))
          continue
        labels.append(pl.make_label(utt, raw, norm, language=text_language))
    writer.write(labels)
    bar.update(len(labels))

  batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
  try:
    pending = None
    for batch in batches:
      current = dispatch(load(batch))  # async: the next batch's audio is read meanwhile
      if pending is not None:
        finish(*pending)
      pending = current
    if pending is not None:
      finish(*pending)
  finally:
    bar.close()
    writer.close()
  done = pl.read_partial(partial, header)
  missing = [u.id for u in utts if u.id not in done]
  if missing:  # cannot happen: every utterance was decoded or recorded as failed
    raise RuntimeError(f"{partial}: {len(missing)} utterances missing after decoding: "
                       f"{missing[:5]}")
  report = pl.write_outputs(out_path, [done[u.id] for u in utts], max_wer, header)
  report.update(decoded=len(todo), resumed=resumed, seconds=time.time() - start)
  log.info("whisper transcripts of %s: kept %d of %d utterances, dropped %s -> %s",
           manifest_path, report["num_kept"], report["num_input"],
           report["dropped_by_reason"] or "none", out_path)
  return report
