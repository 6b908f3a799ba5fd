"""Kaldi data directories -> `Utterance` lists (the layout of Kaldi, ESPnet, icefall, lhotse).

A data directory holds plain-text tables, one record a line, the key first, fields separated by
whitespace (https://kaldi-asr.org/doc/data_prep.html):

  wav.scp     <recording-id> <audio path>     (the utterance id when there is no `segments`)
  text        <utterance-id> <transcript>     (required unless `require_text=False`)
  utt2spk     <utterance-id> <speaker-id>     (required)
  segments    <utterance-id> <recording-id> <start> <end>   (optional; seconds, end -1 = to the
                                               end of the recording)
  spk2gender  <speaker-id> m|f                (optional)

Audio paths. Absolute paths are taken as they are; a relative path resolves against `root`,
which defaults to the data directory's PARENT (`corpus/data` for `corpus/data/train`). Kaldi
and ESPnet recipes write paths relative to the recipe folder (`egs/<corpus>/s5`), which is two
levels above `s5/data/train`: pass `root` (make_manifest: `--kaldi_root`) for those. Only plain
audio files are read: a `wav.scp` entry that is a command pipe (`sox ... |`), an archive or
offset extended filename (`ark:...`, `foo.ark:1234`, `foo.wav[0:100]`), or stdin (`-`) is refused
with a `KaldiError` naming the file, line and id (decode those to files first).

What is kept and what is skipped. Utterances are the keys of `segments` when it exists, else of
`wav.scp`, in file order. Every utterance that cannot be used is a counted skip listed by id in
the returned `pipeline.DataReport` (never a silent drop): `no_transcript` (absent from `text`),
`empty_transcript` (an id alone on its `text` line), `no_speaker` (absent from `utt2spk`),
`missing_audio` (the resolved path does not exist), `corrupt_audio` (its header cannot be read),
`unknown_recording` (a segment of a recording absent from `wav.scp`), `segment_out_of_range`
(starts after the recording ends, or ends more than `max_overshoot` seconds past it; a smaller
overshoot is truncated, as Kaldi's extract-segments does), and `no_audio_entry` (a `text` line
whose id is no utterance). With `require_text=False` (unlabelled audio for sequence-level KD) the
`text` file may be absent, and utterances without a transcript are kept with text "" and
`labelled=False` (`KaldiData.unlabelled` lists them; the training pipeline skips empty
transcripts, so such a manifest feeds pseudo-labelling, not supervised training).

A malformed line (wrong field count, a time that is not a number, end <= start, a duplicate key,
a gender other than m/f) is a `KaldiError` naming the file and line.

Segments. A `manifest.Utterance` names a whole audio file: it has no start/end offsets, and the
pipeline, the teacher cache and evaluation decode whole files (`audio.io.load_audio`). So
`to_utterances` cuts each segment into its own file under `audio_dir` (lossless: FLAC for
integer PCM sources, WAV otherwise, at the recording's own sample rate and channel count) and
the utterance points there; unsegmented utterances point at their recording.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import logging
import os
import re
from typing import Optional, Sequence

import soundfile as sf

from distill_jax.audio import io as audio_io
from distill_jax.data import pipeline
from distill_jax.data.manifest import ManifestError, Utterance

log = logging.getLogger(__name__)

ENGINE = "kaldi"
MAX_OVERSHOOT_S = 0.5  # Kaldi extract-segments' default --max-overshoot
GENDERS = ("m", "f")
# Extended filenames this reader refuses: rspecifiers and stdin, and offsets/ranges into a file.
_RSPECIFIER = re.compile(r"^(?:ark|scp)(?:,[a-z]+)*:|^-$")
_OFFSET = re.compile(r":\d+(?:\[[^\]]*\])?$|\[[^\]]*\]$")
# Source subtypes cut to FLAC without loss (read as int16 / int32), the rest to WAV.
_FLAC_INT16 = ("PCM_16", "PCM_S8", "PCM_U8", "ULAW", "ALAW")
_FLAC_INT24 = ("PCM_24",)


class KaldiError(ManifestError):
  """A Kaldi data directory that cannot be read; the message names the file, line and id."""


@dataclasses.dataclass(frozen=True)
class KaldiUtterance:
  """One utterance of a data directory.

  `path` is the recording's resolved audio file. `start`/`end` (seconds) are set for a
  segment (`end` already resolved when `segments` said -1 or overshot the recording), None for
  a whole-file utterance; `duration` is the utterance's own length in seconds.
  """
  id: str
  recording: str
  path: str
  text: str
  speaker: str
  gender: str = ""  # "m" | "f" | "" (no spk2gender entry)
  duration: float = 0.0
  start: Optional[float] = None
  end: Optional[float] = None
  labelled: bool = True

  @property
  def is_segment(self) -> bool:
    return self.start is not None


@dataclasses.dataclass
class KaldiData:
  """What `read_kaldi_dir` found: usable utterances, skips (by id and reason), speaker genders."""
  data_dir: str
  utterances: list[KaldiUtterance]
  report: pipeline.DataReport
  genders: dict[str, str]

  @property
  def unlabelled(self) -> list[str]:
    return [u.id for u in self.utterances if not u.labelled]

  @property
  def has_segments(self) -> bool:
    return any(u.is_segment for u in self.utterances)


def _read_table(path: str, min_fields: int, max_fields: Optional[int], what: str
                ) -> dict[str, tuple[int, list[str]]]:
  """key -> (line number, fields after the key); the rest of the line is one field when
  `max_fields` is None (a transcript, a path with spaces)."""
  out: dict[str, tuple[int, list[str]]] = {}
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      line = line.rstrip("\r\n")
      if not line.strip():
        continue
      if line[0].isspace():
        raise KaldiError(f"{path}:{lineno}: line starts with whitespace (expected '{what}')")
      if max_fields is None:
        parts = line.split(None, 1)
        fields = [parts[1].strip()] if len(parts) > 1 else []
      else:
        parts = line.split()
        fields = parts[1:]
      key = parts[0]
      n = len(fields)
      if n < min_fields or (max_fields is not None and n > max_fields):
        raise KaldiError(f"{path}:{lineno}: expected '{what}', got {1 + n} field(s) for id "
                         f"{key!r}: {line[:80]!r}")
      if key in out:
        raise KaldiError(f"{path}:{lineno}: duplicate id {key!r} (first on line {out[key][0]})")
      out[key] = (lineno, fields)
  return out


def _check_plain_file(scp: str, lineno: int, key: str, value: str) -> None:
  """Refuses the wav.scp forms that are not a plain audio file path."""
  if value.endswith("|"):
    raise KaldiError(f"{scp}:{lineno}: id {key!r}: {value!r} is a command pipe; only plain "
                     f"audio files are read (run the command once, write the audio to a file "
                     f"and list that file)")
  if _RSPECIFIER.search(value) or _OFFSET.search(value):
    raise KaldiError(f"{scp}:{lineno}: id {key!r}: {value!r} is a Kaldi archive/offset "
                     f"extended filename; only plain audio files are read (extract the audio "
                     f"to files, e.g. with lhotse or Kaldi's wav-copy to .wav)")


def _parse_time(path: str, lineno: int, key: str, value: str, what: str) -> float:
  try:
    t = float(value)
  except ValueError:
    raise KaldiError(f"{path}:{lineno}: utterance {key!r}: {what} time {value!r} is not a "
                     f"number of seconds") from None
  if t != t or t in (float("inf"), float("-inf")):
    raise KaldiError(f"{path}:{lineno}: utterance {key!r}: {what} time {value!r} is not finite")
  return t


def _headers(paths: Sequence[str], num_threads: int = 8
             ) -> dict[str, tuple[int, int] | audio_io.AudioError]:
  """path -> (frames, sample rate), or the AudioError its header raised."""
  def one(path):
    try:
      frames, rate, _ = audio_io.audio_info(path)
      return path, (frames, rate)
    except audio_io.AudioError as e:
      return path, e
  with concurrent.futures.ThreadPoolExecutor(max(1, num_threads)) as pool:
    return dict(pool.map(one, paths))


def read_kaldi_dir(data_dir: str, *, root: Optional[str] = None, require_text: bool = True,
                   max_overshoot: float = MAX_OVERSHOOT_S, num_threads: int = 8) -> KaldiData:
  """Reads a Kaldi data directory (module docstring).

  Args:
    data_dir: folder with wav.scp, utt2spk, text (and optionally segments, spk2gender).
    root: folder relative audio paths resolve against; None: `data_dir`'s parent.
    require_text: False keeps utterances without a transcript (text "", labelled=False).
    max_overshoot: seconds a segment may end past its recording (truncated) before it is a
      `segment_out_of_range` skip.
    num_threads: threads reading audio headers.

  Returns:
    KaldiData: the usable utterances (file order) and the skip report.

  Raises:
    KaldiError: a required file is missing, a line is malformed, a `wav.scp` entry is a pipe or
      an extended filename, or no utterance is usable (naming the reasons and `root`).
  """
  data_dir = os.path.abspath(data_dir)
  if not os.path.isdir(data_dir):
    raise KaldiError(f"Kaldi data directory not found: {data_dir}")
  root = os.path.abspath(root) if root else os.path.dirname(data_dir)
  files = {name: os.path.join(data_dir, name)
           for name in ("wav.scp", "text", "utt2spk", "segments", "spk2gender")}
  required = ["wav.scp", "utt2spk"] + (["text"] if require_text else [])
  missing = [n for n in required if not os.path.isfile(files[n])]
  if missing:
    raise KaldiError(f"{data_dir}: not a Kaldi data directory: missing {missing} (present: "
                     f"{sorted(os.listdir(data_dir))})")

  wav_scp = _read_table(files["wav.scp"], 1, None, "<id> <audio path>")
  recordings: dict[str, str] = {}
  for key, (lineno, (value,)) in wav_scp.items():
    _check_plain_file(files["wav.scp"], lineno, key, value)
    recordings[key] = value if os.path.isabs(value) else os.path.normpath(
        os.path.join(root, value))
  texts = (_read_table(files["text"], 0, None, "<utterance-id> <transcript>")
           if os.path.isfile(files["text"]) else {})
  utt2spk = _read_table(files["utt2spk"], 1, 1, "<utterance-id> <speaker-id>")
  genders: dict[str, str] = {}
  if os.path.isfile(files["spk2gender"]):
    for spk, (lineno, (g,)) in _read_table(files["spk2gender"], 1, 1,
                                           "<speaker-id> m|f").items():
      if g not in GENDERS:
        raise KaldiError(f"{files['spk2gender']}:{lineno}: speaker {spk!r}: gender {g!r} is "
                         f"not one of {GENDERS}")
      genders[spk] = g

  # Utterance id -> (recording id, start, end, where it was listed).
  units: dict[str, tuple[str, Optional[float], Optional[float], str]] = {}
  if os.path.isfile(files["segments"]):
    seg_path = files["segments"]
    for utt, (lineno, (rec, start_s, end_s)) in _read_table(
        seg_path, 3, 3, "<utterance-id> <recording-id> <start> <end>").items():
      start = _parse_time(seg_path, lineno, utt, start_s, "start")
      end = _parse_time(seg_path, lineno, utt, end_s, "end")
      if start < 0:
        raise KaldiError(f"{seg_path}:{lineno}: utterance {utt!r}: negative start {start_s}")
      if end != -1 and end <= start:
        raise KaldiError(f"{seg_path}:{lineno}: utterance {utt!r}: end {end_s} <= start "
                         f"{start_s} (end -1 means the end of the recording)")
      units[utt] = (rec, start, end, f"{seg_path}:{lineno}")
  else:
    for utt, (lineno, _) in wav_scp.items():
      units[utt] = (utt, None, None, f"{files['wav.scp']}:{lineno}")

  report = pipeline.DataReport(name=os.path.basename(data_dir))
  used_recordings = sorted({recordings[r] for r, *_ in units.values() if r in recordings
                            and os.path.exists(recordings[r])})
  headers = _headers(used_recordings, num_threads)
  kept: list[KaldiUtterance] = []
  for utt, (rec, start, end, where) in units.items():
    path = recordings.get(rec, "")
    text_entry = texts.get(utt)
    text = text_entry[1][0] if text_entry and text_entry[1] else ""
    stub = Utterance(utt, path, text)
    if rec not in recordings:
      report.skip(stub, "unknown_recording",
                  f"{where}: recording {rec!r} is not in {files['wav.scp']}")
      continue
    if require_text and text_entry is None:
      report.skip(stub, "no_transcript", f"{where}: utterance not in {files['text']}")
      continue
    if require_text and not text:
      report.skip(stub, "empty_transcript",
                  f"{files['text']}:{text_entry[0]}: no transcript after the id")
      continue
    if utt not in utt2spk:
      report.skip(stub, "no_speaker", f"{where}: utterance not in {files['utt2spk']}")
      continue
    if not os.path.exists(path):
      report.skip(stub, "missing_audio", f"{files['wav.scp']}:{wav_scp[rec][0]}: recording "
                  f"{rec!r}: {path} does not exist (relative paths resolve against {root})")
      continue
    header = headers[path]
    if isinstance(header, audio_io.AudioError):
      report.skip(stub, "corrupt_audio", str(header))
      continue
    frames, rate = header
    rec_seconds = frames / rate
    if start is not None:
      if end == -1:
        end = rec_seconds
      if start >= rec_seconds or end > rec_seconds + max_overshoot:
        report.skip(stub, "segment_out_of_range",
                    f"{where}: segment {start}-{end} s of recording {rec!r} that lasts "
                    f"{rec_seconds:.3f} s (max_overshoot={max_overshoot})")
        continue
      end = min(end, rec_seconds)
      duration = end - start
    else:
      duration = rec_seconds
    speaker = utt2spk[utt][1][0]
    kept.append(KaldiUtterance(
        id=utt, recording=rec, path=path, text=text, speaker=speaker,
        gender=genders.get(speaker, ""), duration=round(duration, 4), start=start, end=end,
        labelled=bool(text)))
    report.kept += 1
    report.kept_seconds += duration
  for utt, (lineno, fields) in texts.items():
    if utt not in units:
      report.skip(Utterance(utt, "", fields[0] if fields else ""), "no_audio_entry",
                  f"{files['text']}:{lineno}: id not in "
                  f"{'segments' if os.path.isfile(files['segments']) else 'wav.scp'}")
  if not kept:
    raise KaldiError(f"{data_dir}: no usable utterance; skipped by reason {report.counts()} "
                     f"(relative audio paths resolve against {root}; set root to change it)")
  if report.skipped:
    log.warning("%s: %d utterances kept, %d skipped %s", data_dir, len(kept),
                len(report.skipped), report.counts())
  return KaldiData(data_dir, kept, report, genders)


def segment_audio_dir(base_dir: str, data_dir: str) -> str:
  """Where `to_utterances` cuts the segments of `data_dir`: `<base_dir>/<name>-<hash8>` (the
  hash of the absolute path keeps two `train` folders of different recipes apart)."""
  data_dir = os.path.abspath(data_dir)
  digest = hashlib.sha256(data_dir.encode()).hexdigest()[:8]
  return os.path.join(base_dir, f"{os.path.basename(data_dir)}-{digest}")


def _safe_name(uid: str) -> str:
  return re.sub(r"[^\w.-]", "_", uid)


def cut_segment(u: KaldiUtterance, audio_dir: str) -> str:
  """Writes segment `u` of its recording to `audio_dir` (lossless); returns the file's path.

  Frames [round(start * rate), round(end * rate)) of the recording, at its sample rate and
  channel count: FLAC for 16/24-bit integer PCM (and 8-bit, mu-law, A-law, decoded to 16 bit),
  WAV of the source's subtype for 32-bit PCM and float, WAV float for other codecs. A file
  already there with the right frame count is reused (an interrupted run resumes).
  """
  if not u.is_segment:
    raise ValueError(f"utterance {u.id!r} is not a segment")
  info = sf.info(u.path)
  start = int(round(u.start * info.samplerate))
  stop = min(info.frames, int(round(u.end * info.samplerate)))
  if info.subtype in _FLAC_INT16 + _FLAC_INT24:
    ext, fmt = ".flac", "FLAC"
    subtype, dtype = ("PCM_16", "int16") if info.subtype in _FLAC_INT16 else ("PCM_24", "int32")
  elif info.subtype in ("PCM_32", "DOUBLE", "FLOAT"):
    ext, fmt, subtype = ".wav", "WAV", info.subtype
    dtype = {"PCM_32": "int32", "DOUBLE": "float64", "FLOAT": "float32"}[info.subtype]
  else:
    ext, fmt, subtype, dtype = ".wav", "WAV", "FLOAT", "float32"
  out = os.path.join(audio_dir, _safe_name(u.id) + ext)
  if os.path.exists(out):
    try:
      if sf.info(out).frames == stop - start:
        return out
    except (sf.LibsndfileError, RuntimeError):
      pass  # a damaged earlier write: cut again
  samples, _ = sf.read(u.path, start=start, stop=stop, dtype=dtype, always_2d=True)
  os.makedirs(audio_dir, exist_ok=True)
  tmp = f"{out}.{os.getpid()}.tmp"
  sf.write(tmp, samples, info.samplerate, format=fmt, subtype=subtype)
  os.replace(tmp, out)
  return out


def to_utterances(data: KaldiData, audio_dir: Optional[str] = None) -> list[Utterance]:
  """Manifest records of `data`: whole-file utterances point at their recording; segments are
  cut into `audio_dir` first (`cut_segment`), which is then required.

  Raises:
    ValueError: `data` has segments and no `audio_dir` was given.
  """
  if data.has_segments and not audio_dir:
    raise ValueError(f"{data.data_dir} has segments: give audio_dir to cut them into (a "
                     f"manifest Utterance names a whole file and has no start/end offsets)")
  out = []
  for u in data.utterances:
    if u.is_segment:
      path = cut_segment(u, audio_dir)
      info = sf.info(path)
      duration = round(info.frames / info.samplerate, 4)
    else:
      path, duration = u.path, u.duration
    out.append(Utterance(u.id, path, u.text, u.speaker, ENGINE, duration))
  return out
