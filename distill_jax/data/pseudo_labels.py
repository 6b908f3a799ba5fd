"""Pseudo-labelled manifests: Whisper's decoded transcripts as the student's hard CTC targets.

Sequence-level KD as distil-whisper does it: the teacher's own transcripts of the audio replace
(or supply) the labels, and where a reference transcript exists an utterance whose
pseudo-label is too far from it (WER > `max_wer`, e.g. 10 %) is dropped, counted and listed by
id. The decoding runs in `jobs/whisper_transcribe.py` (`launch/whisper_transcribe.py`); this
module holds what it writes and reads, and never runs a model.

Files of an output manifest OUT (e.g. `datasets/x/train_whisper.jsonl`):
  OUT                 the pseudo-labelled manifest, in the project manifest format
                      (`data/manifest.py`: id, path, text, speaker, engine, duration), one row
                      per KEPT utterance, with `text` = Whisper's transcript normalized to the
                      project's convention (`text.whisper.normalize_whisper`), plus the fields
                      `label_source` ("whisper"), `whisper_text` (the decoder's raw text),
                      `reference` (the input manifest's text, "" when it had none) and `wer`
                      (against the normalized reference; null without one). `read_manifest`
                      ignores the extra fields, so OUT is a training manifest as it stands.
  OUT.partial         every decoded utterance, one JSON line each, appended (and fsync'ed)
                      batch by batch, after a first header line that records the settings;
                      a killed run loses at most the batch in flight and resumes from here
                      (a torn last line is ignored). Kept beside OUT: a rerun with another
                      `max_wer` re-filters without decoding again.
  OUT.report.json     settings, counts, and every dropped utterance listed by id with its
                      reason ('wer' with the value, 'empty_transcript', 'text' when the
                      transcript cannot be normalized, 'too_long', 'audio').

WER per utterance is jiwer's word error rate of the normalized hypothesis against the
reference normalized with `text.normalize` (the convention the labels follow): substitutions +
deletions + insertions over the reference's words. An empty normalized reference counts as no
reference (the utterance is kept unfiltered, `wer` null).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Iterable, Mapping, Sequence

import jiwer

from distill_jax import text as text_lib
from distill_jax.data import manifest as manifest_lib

LABEL_SOURCE = "whisper"
PARTIAL_SUFFIX = ".partial"
REPORT_SUFFIX = ".report.json"
DROP_REASONS = ("wer", "empty_transcript", "text", "too_long", "audio")


@dataclasses.dataclass(frozen=True)
class PseudoLabel:
  """One decoded utterance (kept or not).

  Attributes:
    id, path, speaker, engine, duration: the input manifest's fields.
    text: the normalized transcript ("" when there is none).
    whisper_text: the decoder's raw text.
    reference: the input manifest's text ("" = no reference).
    wer: WER of `text` against the normalized reference; None without a reference.
    error: why there is no usable transcript ('too_long', 'audio', 'text'), "" otherwise.
    detail: the error's message.
  """
  id: str
  path: str
  text: str
  whisper_text: str
  reference: str = ""
  wer: float | None = None
  speaker: str = ""
  engine: str = ""
  duration: float = 0.0
  error: str = ""
  detail: str = ""


def utterance_wer(reference: str, hypothesis: str, language: str = "en") -> float | None:
  """WER of a normalized hypothesis against a raw reference (normalized here), or None when
  the reference is empty after normalization. A reference that cannot be normalized is an
  error naming it (`text.TextError`)."""
  ref = text_lib.normalize(reference, language=language) if reference else ""
  if not ref:
    return None
  return float(jiwer.wer(ref, hypothesis)) if hypothesis else 1.0


def make_label(utt: manifest_lib.Utterance, whisper_text: str, normalized: str | None,
               *, language: str = "en", error: str = "", detail: str = "") -> PseudoLabel:
  """The record of one decoded utterance: `normalized` is the transcript in the project's
  convention (None when normalization failed: pass error='text' and the message)."""
  hyp = normalized or ""
  wer = None if error else utterance_wer(utt.text, hyp, language)
  return PseudoLabel(id=utt.id, path=utt.path, text=hyp, whisper_text=whisper_text,
                     reference=utt.text, wer=wer, speaker=utt.speaker, engine=utt.engine,
                     duration=utt.duration, error=error, detail=detail)


def failed_label(utt: manifest_lib.Utterance, error: str, detail: str) -> PseudoLabel:
  """An utterance that was not decoded ('too_long', 'audio')."""
  return PseudoLabel(id=utt.id, path=utt.path, text="", whisper_text="", reference=utt.text,
                     speaker=utt.speaker, engine=utt.engine, duration=utt.duration,
                     error=error, detail=detail)


def drop_reason(label: PseudoLabel, max_wer: float | None) -> str:
  """'' when `label` is kept, else one of DROP_REASONS. `max_wer` None disables the filter."""
  if label.error:
    return label.error
  if not label.text:
    return "empty_transcript"
  if max_wer is not None and label.wer is not None and label.wer > max_wer:
    return "wer"
  return ""


def filter_labels(labels: Sequence[PseudoLabel], max_wer: float | None
                  ) -> tuple[list[PseudoLabel], list[dict[str, Any]]]:
  """(kept labels, dropped [{id, reason, wer, reference, hypothesis, detail}]), in input order.

  distil-whisper's filter: an utterance with a reference is dropped when its WER exceeds
  `max_wer` (strictly); one without a reference is kept. Utterances without a usable
  transcript are dropped with their reason whatever `max_wer` is.
  """
  if max_wer is not None and not max_wer >= 0:
    raise ValueError(f"max_wer={max_wer!r}: must be >= 0 (or None for no filter)")
  kept, dropped = [], []
  for label in labels:
    reason = drop_reason(label, max_wer)
    if reason:
      dropped.append(dict(id=label.id, reason=reason, wer=label.wer, reference=label.reference,
                          hypothesis=label.text, detail=label.detail))
    else:
      kept.append(label)
  return kept, dropped


# --------------------------------------------------------------------------- files


def _row(label: PseudoLabel) -> dict[str, Any]:
  return dict(dataclasses.asdict(label), label_source=LABEL_SOURCE)


def _label(row: Mapping[str, Any]) -> PseudoLabel:
  names = {f.name for f in dataclasses.fields(PseudoLabel)}
  return PseudoLabel(**{k: v for k, v in row.items() if k in names})


class PartialWriter:
  """Appends decoded utterances to OUT.partial, one JSON line each, durable per `write`.

  A new file starts with the header line {"header": settings}; an existing one is appended to
  (read it first with `read_partial`, which checks the header).
  """

  def __init__(self, path: str, settings: Mapping[str, Any]):
    self.path = path
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    self._f = open(path, "a", encoding="utf-8")  # pylint: disable=consider-using-with
    if not new:
      self._truncate_torn_line()
    else:
      self._f.write(json.dumps({"header": dict(settings)}, sort_keys=True) + "\n")
      self._sync()

  def _truncate_torn_line(self) -> None:
    with open(self.path, "rb") as f:
      data = f.read()
    if data and not data.endswith(b"\n"):  # a line cut by a kill: drop it
      self._f.close()
      with open(self.path, "r+b") as f:
        f.truncate(data.rfind(b"\n") + 1)
      self._f = open(self.path, "a", encoding="utf-8")  # pylint: disable=consider-using-with

  def _sync(self) -> None:
    self._f.flush()
    os.fsync(self._f.fileno())

  def write(self, labels: Iterable[PseudoLabel]) -> None:
    for label in labels:
      self._f.write(json.dumps(_row(label), ensure_ascii=False) + "\n")
    self._sync()

  def close(self) -> None:
    self._f.close()


def read_partial(path: str, settings: Mapping[str, Any] | None = None
                 ) -> dict[str, PseudoLabel]:
  """{id: label} of a partial file ({} when absent); a torn last line is ignored.

  Raises:
    ValueError: the header's settings differ from `settings` (naming the fields), or a
      line (other than the last) that is not a record (naming file and line).
  """
  if not os.path.exists(path):
    return {}
  with open(path, encoding="utf-8") as f:
    lines = f.read().split("\n")
  torn = lines.pop() if lines else ""  # "" after a final newline; else a torn line
  del torn
  out: dict[str, PseudoLabel] = {}
  for lineno, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg}); delete the file to start "
                       "over") from None
    if lineno == 1:
      if "header" not in row:
        raise ValueError(f"{path}:1: no header line; delete the file to start over")
      if settings is not None:
        have, want = row["header"], json.loads(json.dumps(dict(settings)))
        diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
        if diff:
          raise ValueError(
              f"{path}: made with other settings: " + ", ".join(
                  f"{k}={have.get(k)!r} vs {want.get(k)!r}" for k in diff)
              + "; delete it (or pass overwrite) to start over")
      continue
    out[row["id"]] = _label(row)
  return out


def write_outputs(out_path: str, labels: Sequence[PseudoLabel], max_wer: float | None,
                  settings: Mapping[str, Any]) -> dict[str, Any]:
  """Writes OUT (the kept rows, atomically) and OUT.report.json; returns the report.

  Audio paths below OUT's folder are stored relative to it (as `manifest.write_manifest`).
  """
  kept, dropped = filter_labels(labels, max_wer)
  if not kept:
    raise ValueError(f"{out_path}: every one of the {len(labels)} utterances was dropped "
                     f"({_counts(dropped)}); nothing to write")
  base = os.path.dirname(os.path.abspath(out_path))
  os.makedirs(base, exist_ok=True)
  tmp = f"{out_path}.tmp-{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    for label in kept:
      row = _row(label)
      for k in ("error", "detail"):
        del row[k]
      ap = os.path.abspath(label.path)
      row["path"] = os.path.relpath(ap, base) if ap.startswith(base + os.sep) else ap
      f.write(json.dumps(row, ensure_ascii=False) + "\n")
  os.replace(tmp, out_path)
  with_ref = [x for x in labels if x.wer is not None]
  report = dict(
      manifest=os.path.abspath(out_path), settings=dict(settings), max_wer=max_wer,
      num_input=len(labels), num_kept=len(kept), num_dropped=len(dropped),
      dropped_by_reason=_counts(dropped),
      num_with_reference=len(with_ref),
      mean_wer_with_reference=(sum(x.wer for x in with_ref) / len(with_ref)
                               if with_ref else None),
      kept_seconds=sum(x.duration for x in kept), dropped=dropped)
  tmp = f"{out_path}{REPORT_SUFFIX}.tmp-{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(report, f, indent=1, ensure_ascii=False)
    f.write("\n")
  os.replace(tmp, out_path + REPORT_SUFFIX)
  return report


def _counts(dropped: Sequence[Mapping[str, Any]]) -> dict[str, int]:
  out: dict[str, int] = {}
  for d in dropped:
    out[d["reason"]] = out.get(d["reason"], 0) + 1
  return out


def check_pseudo_labelled(path: str) -> int:
  """Number of rows of `path` after checking that every row is a Whisper pseudo-label
  (`label_source` == 'whisper'); ValueError naming the file and the first other line."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such manifest (make it with launch.whisper_transcribe)")
  n = 0
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
      if row.get("label_source") != LABEL_SOURCE:
        raise ValueError(
            f"{path}:{lineno}: utterance {row.get('id')!r} has label_source="
            f"{row.get('label_source')!r}, not {LABEL_SOURCE!r}: not a Whisper pseudo-labelled "
            "manifest (make one with python -m launch.whisper_transcribe)")
      n += 1
  if not n:
    raise ValueError(f"{path}: an empty manifest")
  return n
