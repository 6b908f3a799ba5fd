"""Writes the latent-trajectory page: ONE self-contained HTML file (no request leaves it).

`write_page(data, path)` embeds a PageData (computed by `jobs/latent_page.py`) into
`template.html` (vanilla JS, canvas drawing, no library): float arrays as little-endian float16
in base64, the spectrogram as uint8 (min-max scaled), the audio as a 16-bit PCM WAV data URL. `write_projector_tsv`
writes the same states at full width for TensorBoard's embedding projector.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import os
import wave

import numpy as np

SAMPLE_RATE = 16000


@dataclasses.dataclass
class Utterance:
  id: str
  text: str
  audio: np.ndarray  # [S] int16
  spectrogram: np.ndarray  # [F, M] float32 log-mel (student frontend, 10 ms hop)
  teacher_probs: np.ndarray  # [Tt, V] float32, teacher frames
  teacher_decode: str
  words: list  # [(word, start_s, end_s)]
  frame_chars: list  # [n] the forced-aligned character of each student frame ('' = blank)
  teacher_coords: np.ndarray  # [n, k] teacher layer in the PCA basis, student frames
  student_probs: np.ndarray  # [K, n, V] float32
  student_decodes: list  # [K] str
  student_coords: np.ndarray  # [K, n, k] mapped student layer in the PCA basis
  kl: np.ndarray  # [K, n] T^2 KL(p_t^T || p_s^T) per student frame
  distance: np.ndarray  # [K, n] ||mapped student - teacher|| / teacher RMS spread
  align_note: str = ""


@dataclasses.dataclass
class PageData:
  meta: dict
  steps: list
  vocab: list  # token of each id
  explained_variance_ratio: np.ndarray  # [k]
  cka: np.ndarray  # [K, Lt + 1, Ls + 1]
  mapped_cka: np.ndarray  # [K]
  student_variance_in_plane: np.ndarray  # [K] share of the mapped student variance in PC1-2
  utterances: list



TEMPLATE = os.path.join(os.path.dirname(__file__), "template.html")
DATA_MARK = "/*__PAGE_DATA__*/null"


def f16(x) -> dict:
  """{'shape', 'f16': base64 of little-endian float16}: what the page's `arr()` decodes."""
  x = np.asarray(x, np.float32)
  if not np.all(np.isfinite(x)):
    raise ValueError(f"non-finite values in an array of shape {x.shape} meant for the page")
  x = np.clip(x, -65000.0, 65000.0)
  return dict(shape=list(x.shape),
              f16=base64.b64encode(x.astype("<f2").tobytes()).decode("ascii"))


def u8(x) -> dict:
  """Min-max scaled to 0..255: {'shape', 'u8', 'lo', 'hi'}."""
  x = np.asarray(x, np.float32)
  lo, hi = float(np.min(x)), float(np.max(x))
  q = np.round((x - lo) / max(hi - lo, 1e-12) * 255).astype(np.uint8)
  return dict(shape=list(x.shape), u8=base64.b64encode(q.tobytes()).decode("ascii"), lo=lo,
              hi=hi)


def wav_data_url(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> str:
  buf = io.BytesIO()
  with wave.open(buf, "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(sample_rate)
    w.writeframes(np.asarray(audio, "<i2").tobytes())
  return "data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def page_json(d: PageData) -> dict:
  utts = []
  for u in d.utterances:
    utts.append(dict(
        id=u.id, text=u.text, duration=len(u.audio) / SAMPLE_RATE,
        audio=wav_data_url(u.audio), spec=u8(u.spectrogram), teacher_probs=f16(u.teacher_probs),
        teacher_decode=u.teacher_decode, words=[[w, a, b] for w, a, b in u.words],
        frame_chars=u.frame_chars, teacher_coords=f16(u.teacher_coords),
        student_probs=f16(u.student_probs), student_decodes=u.student_decodes,
        student_coords=f16(u.student_coords), kl=f16(u.kl), distance=f16(u.distance),
        align_note=u.align_note))
  return dict(meta=d.meta, steps=d.steps, vocab=d.vocab,
              explained_variance_ratio=[float(x) for x in d.explained_variance_ratio],
              cka=f16(d.cka), mapped_cka=[float(x) for x in d.mapped_cka],
              student_variance_in_plane=[float(x) for x in d.student_variance_in_plane],
              utterances=utts)


def render_html(d: PageData) -> str:
  with open(TEMPLATE, encoding="utf-8") as f:
    template = f.read()
  if template.count(DATA_MARK) != 1:
    raise ValueError(f"{TEMPLATE} must contain {DATA_MARK!r} exactly once")
  blob = json.dumps(page_json(d), separators=(",", ":"), allow_nan=False)
  blob = blob.replace("</", "<\\/")  # never close the script element early
  return template.replace(DATA_MARK, blob)


def write_page(d: PageData, path: str) -> dict:
  """Writes the page; returns {'path', 'bytes'}."""
  html = render_html(d)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write(html)
  return dict(path=path, bytes=os.path.getsize(path))


def projector_rows(d: PageData, step_index: int = -1):
  """(vectors [N, k], metadata rows) of the teacher and one checkpoint's student, every frame
  of every utterance, with `__seq_next__` linking each frame to the next of its sequence."""
  vecs, meta = [], []
  step = d.steps[step_index]
  hop = d.meta["student_hop_s"]
  for u in d.utterances:
    for source, coords in (("teacher", u.teacher_coords),
                           (f"student@{step}", u.student_coords[step_index])):
      start = len(vecs)
      for j, v in enumerate(coords):
        nxt = start + j + 1 if j + 1 < len(coords) else ""
        vecs.append(v)
        meta.append([source, u.id, str(j), f"{j * hop:.2f}", u.frame_chars[j] or "_",
                     str(nxt)])
  return np.asarray(vecs), meta


PROJECTOR_HEADER = ["source", "utterance", "frame", "time_s", "char", "__seq_next__"]


def write_projector_tsv(d: PageData, prefix: str) -> tuple[str, str]:
  """prefix_vectors.tsv (PCA coordinates) and prefix_metadata.tsv for projector.tensorflow.org
  or TensorBoard's projector ('Load' both files)."""
  vecs, meta = projector_rows(d)
  vp, mp = f"{prefix}_vectors.tsv", f"{prefix}_metadata.tsv"
  with open(vp, "w") as f:
    for v in vecs:
      f.write("\t".join(f"{x:.5g}" for x in v) + "\n")
  with open(mp, "w") as f:
    f.write("\t".join(PROJECTOR_HEADER) + "\n")
    for row in meta:
      f.write("\t".join(row) + "\n")
  return vp, mp
