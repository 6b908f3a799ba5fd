"""launch.export and launch.transcribe on a tiny training run folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from configs import base
from distill_jax.export import folder
from distill_jax.train import checkpoint as ckpt_lib
from distill_jax.train import state as state_lib
from tests.export.conftest import tiny_student

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run_folder(path: str) -> None:
  """A run folder as the loop writes it: vocab.json + a checkpoint with the saved config."""
  config = base.get_config()
  config.model.conformer.update(dict(model_dim=32, num_layers=2, num_heads=4,
                                     subsampling_channels=8, conv_kernel=5))
  model, params, tok = tiny_student("conformer")
  tok.save(path)
  tx = state_lib.make_optimizer(config.train)
  ckpt = ckpt_lib.Checkpointer(path)
  ckpt.save(7, state_lib.create_state(params, tx, 0), dict(config=config.to_dict()),
            {"dev_wer": 1.0})
  ckpt.close()


def _launch(*args):
  proc = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


@pytest.mark.slow  # export + transcribe through both launch scripts: about 50 s on 2 CPUs
def test_export_then_transcribe(tmp_path):
  run = str(tmp_path / "run")
  _run_folder(run)
  out = str(tmp_path / "exported")
  report = json.loads(_launch("launch.export", f"--workdir={run}", "--checkpoint=latest",
                              f"--out={out}"))
  assert report["parity"]["max_abs_logits"] <= 1e-4
  with open(os.path.join(out, "export.json")) as f:
    assert json.load(f)["source"] == json.dumps(
        dict(checkpoint="latest", step=7, workdir=run), sort_keys=True)
  # Stereo 44.1 kHz audio, and a second mono file.
  wav = folder.test_signal(1.5, sample_rate=44100)
  stereo = str(tmp_path / "stereo.flac")
  sf.write(stereo, np.stack([wav, 0.5 * wav], 1), 44100)
  mono = str(tmp_path / "mono.wav")
  sf.write(mono, folder.test_signal(1.0), 16000)
  lines = _launch("launch.transcribe", out, stereo, mono, "--int8").splitlines()
  assert [ln.split("\t")[0] for ln in lines] == [stereo, mono]
  # A run folder goes through the same runtime (exported on the fly) and gives the same text.
  float_lines = _launch("launch.transcribe", out, stereo, mono).splitlines()
  run_lines = _launch("launch.transcribe", run, stereo, mono, "--checkpoint=latest").splitlines()
  assert run_lines == float_lines
