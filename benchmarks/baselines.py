r"""The pocketsphinx baseline: WER / CER / RTF of CMU PocketSphinx's default en-us model.

The classic HMM-GMM reference that every report puts beside our students and Whisper. One run
decodes either the repo's real English clips (transcript folders: `id<TAB>text` in
transcripts.tsv, audio beside it) or JSONL manifests (`distill_jax.data.manifest`: id, path,
text, ...), optionally a seeded subset of them, with pocketsphinx's bundled en-us acoustic model,
`en-us.lm.bin` 3-gram LM and `cmudict-en-us.dict` (the defaults of `pocketsphinx.Decoder()`; no
network, nothing downloaded), and scores it with jiwer.

- Audio: `distill_jax.audio.io.load_audio` (mono, resampled to 16 kHz with soxr HQ, e.g. LJ
  Speech's 22.05 kHz and FSDD's 8 kHz), then to int16 PCM (exact for 16-bit sources), decoded as
  one whole utterance per clip (`process_raw(full_utt=True)`: batch CMN over the clip, so the
  result does not depend on the order of the clips).
- Text: references and hypotheses both through `distill_jax.text.normalize` (upper case,
  apostrophes kept, punctuation dropped, digits spelled with num2words: pocketsphinx's dictionary
  has no digits, but any digit it emitted would be spelled, and the number of hypotheses holding
  one is reported). Filler tokens (`<sil>`, `[NOISE]`, `++...++`) are removed from hypotheses
  first and counted.
- Scores: corpus WER (jiwer word alignment: substitutions, deletions, insertions) and CER (jiwer
  characters, the spaces between words included), overall and per source (clip folder or
  manifest).
- Speed: RTF = decoding seconds / audio seconds, measured around `start_utt` .. `hyp` only
  (audio loading and resampling excluded), on one thread (pocketsphinx is single-threaded; the
  BLAS/OpenMP pools are pinned to 1 too). Wall-clock and CPU-time RTF are both reported: on a
  shared machine the CPU-time figure is the steadier one.
- Skips: a clip whose audio cannot be read, or whose reference is empty after normalization
  (unlabelled manifest rows), is not scored; each is counted and listed by id in the JSON.

  # The repo's 43 real English clips:
  python -m benchmarks.baselines --out=runs/baselines
  # A manifest (or a seeded subset of it):
  python -m benchmarks.baselines --manifest=/data/speechocean762_test.jsonl --out=runs/baselines
  python -m benchmarks.baselines --manifest=/data/speechocean762_test.jsonl --limit=500 --seed=0

Writes OUT/<name>.tsv (per utterance: source, id, seconds, decode seconds, reference and
hypothesis raw and normalized, word errors, reference words) while it runs, and OUT/<name>.json
(the summary, skips, the decoder's model files and package versions) at the end. <name> is
--name, else `pocketsphinx_real_english` or `pocketsphinx_<manifest stem>[_n<limit>_seed<seed>]`.
Needs pocketsphinx (pip install pocketsphinx==5.1.1), jiwer, soxr.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
  os.environ.setdefault(_var, "1")

# pylint: disable=wrong-import-position
import argparse
import dataclasses
import importlib.metadata
import json
import platform
import random
import re
import sys
import time

import numpy as np

FOLDERS = ("ljspeech_coqui_tts", "librivox_pocketsphinx", "cards_pocketsphinx",
           "goforward_pocketsphinx")
SAMPLE_RATE = 16000
_FILLER = re.compile(r"^(?:<[^>]*>|\[[^\]]*\]|\+\+.*\+\+)$")
_TSV_COLUMNS = ("source", "id", "seconds", "decode_seconds", "ref", "hyp", "ref_norm", "hyp_norm",
                "word_errors", "ref_words")


@dataclasses.dataclass
class Item:
  """One utterance to decode: where it came from (clip folder or manifest) and its reference."""
  source: str
  id: str
  path: str
  ref: str


def package_version(dist: str) -> str:
  """The installed version of a distribution, or "not installed"."""
  try:
    return importlib.metadata.version(dist)
  except importlib.metadata.PackageNotFoundError:
    return "not installed"


def _parse(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--manifest", action="append", default=None,
                 help="JSONL manifest to decode (repeatable); without it, the clip folders.")
  p.add_argument("--data", default="data/real_english", help="Folder holding the clip folders.")
  p.add_argument("--folders", default=",".join(FOLDERS), help="Comma-separated clip folders.")
  p.add_argument("--limit", type=int, default=0,
                 help="Decode a seeded random subset of this many utterances (0: all).")
  p.add_argument("--seed", type=int, default=0, help="Seed of the --limit subset.")
  p.add_argument("--name", default=None, help="Output file stem (default: from the input).")
  p.add_argument("--out", default="runs/baselines", help="Output folder.")
  p.add_argument("--progress_every", type=int, default=50,
                 help="Print a running WER every this many utterances (0: never).")
  args = p.parse_args(argv)
  if args.limit < 0:
    p.error(f"--limit={args.limit}: give 0 (all) or a positive count")
  return args


def _items(args) -> tuple[list[Item], str]:
  """The utterances to decode (the seeded subset when --limit) and the output name."""
  from distill_jax.data import local  # pylint: disable=import-outside-toplevel
  from distill_jax.data import manifest  # pylint: disable=import-outside-toplevel
  items: list[Item] = []
  if args.manifest:
    for m in args.manifest:
      source = os.path.splitext(os.path.basename(m))[0]
      items += [Item(source, u.id, u.path, u.text) for u in manifest.read_manifest(m)]
    name = "pocketsphinx_" + "+".join(
        os.path.splitext(os.path.basename(m))[0] for m in args.manifest)
  else:
    for folder in args.folders.split(","):
      items += [Item(folder, u.id, u.path, u.text)
                for u in local.read_transcripts_folder(os.path.join(args.data, folder))]
    name = "pocketsphinx_real_english"
  if not items:
    raise SystemExit("nothing to decode: the manifests / folders are empty")
  seen = {}
  for i, it in enumerate(items):
    key = (it.source, it.id)
    if key in seen:
      raise SystemExit(f"duplicate utterance id {it.id!r} in {it.source}")
    seen[key] = i
  if args.limit:
    if args.limit > len(items):
      raise SystemExit(f"--limit={args.limit} but only {len(items)} utterances")
    keep = sorted(random.Random(args.seed).sample(range(len(items)), args.limit))
    items = [items[i] for i in keep]
    name += f"_n{args.limit}_seed{args.seed}"
  return items, args.name or name


def to_int16(audio: np.ndarray) -> np.ndarray:
  """float waveform [S] in [-1, 1] -> int16 [S] (x * 32768, rounded and clipped): exact for
  audio that libsndfile read from 16-bit PCM."""
  return np.clip(np.rint(audio * 32768.0), -32768, 32767).astype(np.int16)


def clean_hypothesis(hyp: str) -> tuple[str, int]:
  """Drops filler tokens (`<sil>`, `[NOISE]`, `++BREATH++`); returns (text, fillers removed)."""
  words = hyp.split()
  kept = [w for w in words if not _FILLER.match(w)]
  return " ".join(kept), len(words) - len(kept)


def score(refs: list[str], hyps: list[str]) -> dict:
  """Corpus WER and CER (jiwer) of normalized references and hypotheses, with error counts."""
  import jiwer  # pylint: disable=import-outside-toplevel
  if not refs:
    return dict(wer=float("nan"), cer=float("nan"), ref_words=0, sub=0, dele=0, ins=0,
                ref_chars=0, utterances=0)
  w = jiwer.process_words(refs, hyps)
  c = jiwer.process_characters(refs, hyps)
  return dict(wer=w.wer, cer=c.cer, ref_words=w.hits + w.substitutions + w.deletions,
              sub=w.substitutions, dele=w.deletions, ins=w.insertions,
              ref_chars=c.hits + c.substitutions + c.deletions, utterances=len(refs))


def make_decoder():
  """pocketsphinx's default en-us Decoder (bundled model, LM, dictionary) and its files."""
  import pocketsphinx  # pylint: disable=import-outside-toplevel
  pocketsphinx.set_loglevel("FATAL")
  decoder = pocketsphinx.Decoder()  # the bundled en-us model, LM and dictionary
  if int(decoder.config["samprate"]) != SAMPLE_RATE:
    raise SystemExit(f"pocketsphinx samprate {decoder.config['samprate']} != {SAMPLE_RATE}")
  files = {k: decoder.config[k] for k in ("hmm", "lm", "dict")}
  return decoder, files


def decode(decoder, pcm: np.ndarray) -> tuple[str, float, float]:
  """One whole utterance -> (hypothesis, wall seconds, CPU seconds of this thread)."""
  t0, c0 = time.perf_counter(), time.thread_time()
  decoder.start_utt()
  decoder.process_raw(pcm.tobytes(), no_search=False, full_utt=True)
  decoder.end_utt()
  hyp = decoder.hyp()
  text = hyp.hypstr if hyp is not None else ""
  return text, time.perf_counter() - t0, time.thread_time() - c0


def run(args) -> dict:
  """Decodes, writes OUT/<name>.tsv and OUT/<name>.json; returns the summary."""
  import jiwer  # pylint: disable=import-outside-toplevel
  from benchmarks import common as bcommon  # pylint: disable=import-outside-toplevel
  from distill_jax import text  # pylint: disable=import-outside-toplevel
  from distill_jax.audio import io as audio_io  # pylint: disable=import-outside-toplevel

  items, name = _items(args)
  decoder, files = make_decoder()
  os.makedirs(args.out, exist_ok=True)
  tsv_path = os.path.join(args.out, name + ".tsv")
  rows, skipped = [], []
  fillers = digit_hyps = 0
  wall = cpu = 0.0
  with open(tsv_path, "w", encoding="utf-8") as tsv:
    tsv.write("\t".join(_TSV_COLUMNS) + "\n")
    for n, it in enumerate(items, 1):
      try:
        ref_norm = text.normalize(it.ref)
      except text.TextError as e:
        skipped.append(dict(source=it.source, id=it.id, reason="bad_reference", detail=str(e)))
        continue
      if not ref_norm:
        skipped.append(dict(source=it.source, id=it.id, reason="empty_reference",
                            detail=f"reference {it.ref!r} is empty after normalization"))
        continue
      try:
        audio = audio_io.load_audio(it.path, SAMPLE_RATE)
      except audio_io.AudioError as e:
        skipped.append(dict(source=it.source, id=it.id, reason="bad_audio", detail=str(e)))
        continue
      hyp, w_s, c_s = decode(decoder, to_int16(audio))
      wall, cpu = wall + w_s, cpu + c_s
      hyp_clean, nf = clean_hypothesis(hyp)
      fillers += nf
      digit_hyps += bool(re.search(r"\d", hyp_clean))
      hyp_norm = text.normalize(hyp_clean)
      o = jiwer.process_words(ref_norm, hyp_norm)
      row = dict(source=it.source, id=it.id, seconds=len(audio) / SAMPLE_RATE,
                 decode_seconds=w_s, cpu_seconds=c_s, ref=it.ref, hyp=hyp, ref_norm=ref_norm,
                 hyp_norm=hyp_norm, word_errors=o.substitutions + o.deletions + o.insertions,
                 ref_words=o.hits + o.substitutions + o.deletions)
      rows.append(row)
      cells = [str(row[k]) if not isinstance(row[k], float) else f"{row[k]:.4f}"
               for k in _TSV_COLUMNS]
      tsv.write("\t".join(c.replace("\t", " ").replace("\n", " ") for c in cells) + "\n")
      tsv.flush()
      if args.progress_every and n % args.progress_every == 0:
        s = score([r["ref_norm"] for r in rows], [r["hyp_norm"] for r in rows])
        secs = sum(r["seconds"] for r in rows)
        print(f"[{n}/{len(items)}] WER {100 * s['wer']:.2f}% CER {100 * s['cer']:.2f}% "
              f"RTF wall {wall / secs:.3f} cpu {cpu / secs:.3f}", flush=True)
  if not rows:
    raise SystemExit(f"no utterance could be scored; skipped: {skipped[:5]} ...")

  audio_seconds = sum(r["seconds"] for r in rows)
  overall = score([r["ref_norm"] for r in rows], [r["hyp_norm"] for r in rows])
  by_source = {}
  for src in dict.fromkeys(r["source"] for r in rows):
    sel = [r for r in rows if r["source"] == src]
    by_source[src] = dict(**score([r["ref_norm"] for r in sel], [r["hyp_norm"] for r in sel]),
                          seconds=sum(r["seconds"] for r in sel))
  skip_counts: dict[str, int] = {}
  for s in skipped:
    skip_counts[s["reason"]] = skip_counts.get(s["reason"], 0) + 1
  summary = dict(
      system="pocketsphinx en-us (default Decoder())", name=name, inputs=(
          args.manifest or [os.path.join(args.data, f) for f in args.folders.split(",")]),
      limit=args.limit, seed=args.seed if args.limit else None, requested=len(items),
      scored=len(rows), skipped_by_reason=skip_counts, skipped=skipped, **overall,
      by_source=by_source, audio_seconds=audio_seconds, decode_wall_seconds=wall,
      decode_cpu_seconds=cpu, rtf_wall=wall / audio_seconds, rtf_cpu=cpu / audio_seconds,
      threads=1, filler_tokens_removed=fillers, hypotheses_with_digits=digit_hyps,
      empty_hypotheses=sum(not r["hyp_norm"] for r in rows), decoder_files=files,
      cpu=bcommon.cpu_description(), load_average=os.getloadavg(),
      python=platform.python_version(), command=" ".join([sys.executable] + sys.argv),
      versions={d: package_version(d) for d in ("pocketsphinx", "jiwer", "num2words", "soxr",
                                          "soundfile", "numpy")},
      tsv=tsv_path)
  with open(os.path.join(args.out, name + ".json"), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=1)
  print(_markdown(summary))
  return summary


def _markdown(s: dict) -> str:
  lines = [
      f"# {s['system']}: {s['scored']} utterances ({s['audio_seconds'] / 60:.1f} min)"
      + (f", seeded subset n={s['limit']} seed={s['seed']}" if s["limit"] else ""), "",
      "Versions: " + ", ".join(f"{k} {v}" for k, v in s["versions"].items())
      + f"; {s['cpu']}, load average {', '.join(f'{x:.1f}' for x in s['load_average'])}", "",
      "| source | utts | minutes | WER % | CER % | sub | del | ins | ref words |",
      "|---|---|---|---|---|---|---|---|---|"]
  for src, b in list(s["by_source"].items()) + [("**all**", s)]:
    minutes = b.get("seconds", s["audio_seconds"]) / 60
    lines.append(f"| {src} | {b['utterances']} | {minutes:.1f} | {100 * b['wer']:.2f} | "
                 f"{100 * b['cer']:.2f} | {b['sub']} | {b['dele']} | {b['ins']} | "
                 f"{b['ref_words']} |")
  lines += ["", f"RTF (1 thread): wall {s['rtf_wall']:.3f}, CPU {s['rtf_cpu']:.3f} "
            f"({s['decode_wall_seconds']:.1f} s wall, {s['decode_cpu_seconds']:.1f} s CPU "
            f"for {s['audio_seconds']:.1f} s of audio).",
            f"Skipped: {s['skipped_by_reason'] or 'none'}; filler tokens removed: "
            f"{s['filler_tokens_removed']}; hypotheses with digits: "
            f"{s['hypotheses_with_digits']}; empty hypotheses: {s['empty_hypotheses']}.",
            f"Per utterance: {s['tsv']}"]
  return "\n".join(lines)


def main(argv=None) -> None:
  run(_parse(argv))


if __name__ == "__main__":
  main()
