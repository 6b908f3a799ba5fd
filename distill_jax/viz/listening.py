"""The denoiser's listening page: one offline HTML file to hear and see noisy / enhanced / clean.

`write_listening_page(clips, systems, out, sample_rate)` writes a page with, per test clip
(grouped by SNR), one column per system: an <audio> player (16-bit FLAC, base64 data URL), a
log-magnitude spectrogram (PNG, base64) and the clip's metrics; a summary table per SNR
(mean of each metric per system over the clips on the page) heads it. Nothing is fetched:
the page holds all its audio, images and script (a few lines: one player at a time).

clips: [{'id': str, 'snr': float, 'audio': {system: [S] float}, 'metrics': {system: {name:
float}}}]; every clip must have audio for every system (an error names the clip and system).
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any, Sequence

import numpy as np

_STYLE = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:center;vertical-align:top}
th{background:#f3f3f3} img{display:block;width:260px;height:90px;image-rendering:pixelated}
audio{width:260px} .m{font-size:12px;color:#444;white-space:pre}
"""
_SCRIPT = """
document.addEventListener('play', e => {
  for (const a of document.querySelectorAll('audio')) if (a !== e.target) a.pause();
}, true);
"""


def _flac_data_url(x: np.ndarray, sample_rate: int) -> str:
  import soundfile as sf
  buf = io.BytesIO()
  sf.write(buf, np.clip(np.asarray(x, np.float32), -1, 1), sample_rate, format="FLAC",
           subtype="PCM_16")
  return "data:audio/flac;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _spectrogram_data_url(x: np.ndarray, sample_rate: int, fft: int = 256,
                          hop: int = 256) -> str:
  """Log-magnitude spectrogram (80 dB range, low frequencies at the bottom) as a PNG, at about
  the size it is shown (16 ms per column, 31 Hz per row at 16 kHz): the page stays small."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  x = np.asarray(x, np.float64)
  if x.shape[0] < fft:
    x = np.pad(x, (0, fft - x.shape[0]))
  n = 1 + (x.shape[0] - fft) // hop
  frames = np.stack([x[i * hop:i * hop + fft] for i in range(n)]) * np.hanning(fft)
  db = 20 * np.log10(np.abs(np.fft.rfft(frames, axis=1)).T + 1e-9)
  db = np.clip(db - db.max(), -80, 0)
  buf = io.BytesIO()
  plt.imsave(buf, db[::-1], cmap="magma", vmin=-80, vmax=0, format="png")
  return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt(metrics: dict[str, float]) -> str:
  return "\n".join(f"{k} {v:.2f}" for k, v in metrics.items())


def write_listening_page(clips: Sequence[dict[str, Any]], systems: Sequence[str], out: str,
                         sample_rate: int = 16000, title: str = "Denoiser listening page",
                         notes: str = "") -> dict[str, Any]:
  """Writes `out`; returns {'clips', 'systems', 'bytes'}."""
  if not clips or not systems:
    raise ValueError("write_listening_page: need at least one clip and one system")
  for c in clips:
    missing = [s for s in systems if s not in c.get("audio", {})]
    if missing:
      raise ValueError(f"write_listening_page: clip {c.get('id')!r} has no audio for {missing}")
  snrs = sorted({float(c["snr"]) for c in clips})
  names = sorted({k for c in clips for m in c.get("metrics", {}).values() for k in m})
  parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
           f"</title><style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
  if notes:
    parts.append(f"<p>{html.escape(notes)}</p>")
  parts.append("<h2>Means over the clips on this page</h2><table><tr><th>SNR</th>"
               "<th>system</th>" + "".join(f"<th>{html.escape(n)}</th>" for n in names) + "</tr>")
  for snr in snrs:
    for s in systems:
      vals = [[c["metrics"].get(s, {}).get(n) for c in clips if float(c["snr"]) == snr]
              for n in names]
      cells = "".join(
          f"<td>{np.mean([v for v in vs if v is not None]):.2f}</td>"
          if any(v is not None for v in vs) else "<td></td>" for vs in vals)
      parts.append(f"<tr><td>{snr:g} dB</td><td>{html.escape(s)}</td>{cells}</tr>")
  parts.append("</table>")
  for snr in snrs:
    parts.append(f"<h2>{snr:g} dB SNR</h2><table><tr><th>clip</th>" +
                 "".join(f"<th>{html.escape(s)}</th>" for s in systems) + "</tr>")
    for c in (c for c in clips if float(c["snr"]) == snr):
      row = [f"<td>{html.escape(str(c['id']))}</td>"]
      for s in systems:
        a = c["audio"][s]
        row.append(f"<td><audio controls preload='metadata' data-system='{html.escape(s)}' "
                   f"src='{_flac_data_url(a, sample_rate)}'></audio>"
                   f"<img alt='spectrogram' src='{_spectrogram_data_url(a, sample_rate)}'>"
                   f"<div class='m'>{html.escape(_fmt(c.get('metrics', {}).get(s, {})))}"
                   "</div></td>")
      parts.append("<tr>" + "".join(row) + "</tr>")
    parts.append("</table>")
  parts.append(f"<script>{_SCRIPT}</script></body></html>")
  text = "".join(parts)
  with open(out, "w", encoding="utf-8") as f:
    f.write(text)
  return dict(clips=len(clips), systems=list(systems), bytes=len(text.encode("utf-8")))


def clips_from_compare(folder: str, metrics: Sequence[str] = ("pesq", "estoi", "sisdr")
                       ) -> tuple[list[dict[str, Any]], list[str]]:
  """(clips, systems) from `benchmarks/enhance_compare.py --save_audio` output
  (FOLDER/audio/index.json and its WAVs); systems in index order with 'clean' last."""
  import json
  import os

  import soundfile as sf
  path = os.path.join(folder, "audio", "index.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: not found (run benchmarks.enhance_compare with "
                            "--save_audio)")
  with open(path, encoding="utf-8") as f:
    index = json.load(f)
  systems: list[str] = []
  clips = []
  for entry in index:
    audio = {"clean": sf.read(os.path.join(folder, "audio", entry["clean"]), dtype="float32")[0]}
    scores = {}
    for name, item in entry["systems"].items():
      if name not in systems:
        systems.append(name)
      audio[name] = sf.read(os.path.join(folder, "audio", item["file"]), dtype="float32")[0]
      scores[name] = {k: float(item["metrics"][k]) for k in metrics
                      if (item.get("metrics") or {}).get(k) is not None}
    clips.append(dict(id=entry["id"], snr=entry["snr"], audio=audio, metrics=scores))
  return clips, systems + ["clean"]
