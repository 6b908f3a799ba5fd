"""Metric logging: TensorBoard (tensorboardX) and JSONL side by side, and the end-of-run plot."""

from __future__ import annotations

import json
import os
import time

import numpy as np


class MetricWriter:
  """Writes scalars to `workdir/tb` (TensorBoard) and appends them to `workdir/metrics.jsonl`.

  `enabled=False` (the non-main processes of a multi-host run) writes nothing.
  """

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
    if not enabled:
      return
    from tensorboardX import SummaryWriter  # imported here: heavy, and only the trainer needs it
    os.makedirs(workdir, exist_ok=True)
    self.tb = SummaryWriter(os.path.join(workdir, "tb"))
    self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")

  def write(self, step: int, scalars: dict, prefix: str = "") -> None:
    if not self.enabled:
      return
    row = {"step": int(step), "time": time.time()}
    for k, v in scalars.items():
      name = f"{prefix}{k}"
      v = float(np.asarray(v))
      row[name] = v
      self.tb.add_scalar(name, v, int(step))
    self._jsonl.write(json.dumps(row) + "\n")
    self._jsonl.flush()

  def close(self) -> None:
    if not self.enabled:
      return
    self.tb.close()
    self._jsonl.close()


def read_jsonl(path: str) -> list[dict]:
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def plot_curves(jsonl_path: str, out_png: str, title: str = "") -> str:
  """Training loss and dev WER against step and wall time, from `metrics.jsonl`."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  rows = read_jsonl(jsonl_path)
  train = [r for r in rows if "train/loss" in r]
  wall: dict[int, float] = {}  # step -> training wall minutes (logged in its own rows)
  for r in rows:
    if "train/wall_minutes" in r:
      wall[r["step"]] = max(wall.get(r["step"], 0.0), r["train/wall_minutes"])
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  if train:
    axes[0].plot([r["step"] for r in train], [r["train/loss"] for r in train], lw=1)
  axes[0].set(xlabel="step", ylabel="CTC loss per token", title="training loss", yscale="log")
  splits = sorted({k.split("/")[0] for r in rows for k in r if k.endswith("/wer")})
  for split in splits:
    ev = [r for r in rows if f"{split}/wer" in r]
    minutes = [wall.get(r["step"], float("nan")) for r in ev]
    axes[1].plot(minutes, [100 * r[f"{split}/wer"] for r in ev], "o-", label=f"{split} WER")
    axes[1].plot(minutes, [100 * r[f"{split}/cer"] for r in ev], "s--", label=f"{split} CER")
  if splits:
    axes[1].legend()
  axes[1].set(xlabel="training wall time (minutes)", ylabel="%", title="error rates (greedy CTC)")
  axes[1].grid(alpha=0.3)
  axes[0].grid(alpha=0.3)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(out_png, dpi=110)
  plt.close(fig)
  return out_png
