"""End-to-end training on the tiny synthetic corpus: a run, exact resume after SIGKILL,
evaluation of a checkpoint, and config errors."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jiwer
import numpy as np
import pytest

from distill_jax.train import runs, warm_start
from distill_jax.jobs import evaluate

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "tests", "train", "tiny_config.py")


def _train_cmd(corpus, workdir, *overrides):
  return [sys.executable, "-m", "launch.train", f"--config={CONFIG}:{corpus}",
          f"--workdir={workdir}", *overrides]


def _run(cmd):
  return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def uninterrupted(tiny_corpus, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("run_a"))
  proc = _run(_train_cmd(tiny_corpus, workdir))
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


def _config(corpus):
  sys.path.insert(0, os.path.dirname(CONFIG))
  import tiny_config  # pylint: disable=import-outside-toplevel
  return tiny_config.get_config(corpus)


def test_run_writes_logs_checkpoints_and_plot(uninterrupted):
  files = set(os.listdir(uninterrupted))
  assert {"metrics.jsonl", "curves.png", "tb", "checkpoints", "vocab.json", "data_report.json",
          "train_summary.json"} <= files
  rows = [json.loads(l) for l in open(os.path.join(uninterrupted, "metrics.jsonl"))]
  losses = [r["train/loss"] for r in rows if "train/loss" in r]
  assert len(losses) == 8 and all(np.isfinite(losses))
  assert losses[-1] < losses[0]
  assert any("dev/wer" in r for r in rows)
  summary = json.load(open(os.path.join(uninterrupted, "train_summary.json")))
  assert summary["step"] == 40 and summary["compiled_programs"] <= 3
  steps = sorted(int(s) for s in os.listdir(os.path.join(uninterrupted, "checkpoints"))
                 if s.isdigit())
  assert steps[-2:] == [35, 40]  # keep_last=2 (plus the best by dev WER)
  report = json.load(open(os.path.join(uninterrupted, "data_report.json")))
  assert set(report) == {"train", "dev"}
  assert report["train"]["kept"] > 0 and report["train"]["skipped_at_batch_time"] == []


def test_sigkill_and_resume_gives_identical_parameters(tiny_corpus, uninterrupted, tmp_path):
  workdir = str(tmp_path / "run_b")
  proc = subprocess.Popen(_train_cmd(tiny_corpus, workdir), cwd=REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  deadline = time.time() + 600
  while time.time() < deadline and proc.poll() is None:
    if os.path.isdir(ckpt_dir) and any(s.isdigit() and int(s) >= 10 for s in os.listdir(ckpt_dir)):
      break
    time.sleep(0.01)
  assert proc.poll() is None, "the run ended before it could be killed"
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  killed_at = max(int(s) for s in os.listdir(ckpt_dir) if s.isdigit())
  assert killed_at < 40
  done = _run(_train_cmd(tiny_corpus, workdir))
  assert done.returncode == 0, done.stderr[-3000:]
  assert f"resumed from step {killed_at}" in done.stderr

  _, params_a, _, step_a = runs.restore_student(uninterrupted, "latest")
  _, params_b, _, step_b = runs.restore_student(workdir, "latest")
  assert step_a == step_b == 40
  jax.tree_util.tree_map(np.testing.assert_array_equal, params_a, params_b)


def test_evaluate_checkpoint_writes_hypotheses(tiny_corpus, uninterrupted):
  res = evaluate.evaluate_run(uninterrupted, config=_config(tiny_corpus), which="best",
                              splits=["test"])["test"]
  assert res["utterances"] == 8 and res["skipped_ids"] == []
  out = os.path.join(uninterrupted, "eval", f"test_step{res['step']}")
  lines = open(os.path.join(out, "hypotheses.tsv")).read().splitlines()
  assert lines[0] == "id\treference\thypothesis\twer" and len(lines) == 9
  # The summary's scores are those of the written hypotheses.
  rows = [line.split("\t") for line in lines[1:]]
  assert res["cer"] == pytest.approx(jiwer.cer([r[1] for r in rows], [r[2] for r in rows]))
  assert res["wer"] == pytest.approx(jiwer.wer([r[1] for r in rows], [r[2] for r in rows]))
  # 'avg:2' (steps 35 and 40 averaged) is scored under its own tag, not over step 40's.
  avg = evaluate.evaluate_run(uninterrupted, config=_config(tiny_corpus), which="avg:2",
                              splits=["test"])["test"]
  assert avg["step"] == 40 and avg["checkpoint"] == "avg:2"
  assert os.path.exists(os.path.join(uninterrupted, "eval", "test_step40_avg2", "summary.json"))


def test_misspelled_config_key_is_named(tiny_corpus, tmp_path):
  proc = _run(_train_cmd(tiny_corpus, str(tmp_path), "--config.train.lrr=0.1"))
  assert proc.returncode != 0
  assert "lrr" in proc.stderr


def test_resume_with_a_different_model_is_refused(tiny_corpus, uninterrupted, tmp_path):
  import shutil  # pylint: disable=import-outside-toplevel
  workdir = str(tmp_path / "copy")
  shutil.copytree(uninterrupted, workdir)
  proc = _run(_train_cmd(tiny_corpus, workdir, "--config.seed=7"))
  assert proc.returncode != 0 and "different ['seed']" in proc.stderr


def test_warm_start_takes_the_weights_and_names_a_model_difference(tiny_corpus, uninterrupted):
  _, params, _, _ = runs.restore_student(uninterrupted, "latest")
  config = _config(tiny_corpus)
  # Training-only augmentations may change between phases (warm_start.WARM_START_FREE).
  config.model.specaug_enabled = not config.model.specaug_enabled
  config.model.vtlp_enabled = not config.model.vtlp_enabled
  zeros = jax.tree.map(np.zeros_like, params)
  loaded = warm_start.warm_start_params(config, uninterrupted, zeros)
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)
  config.model.head_dropout = 0.3
  with pytest.raises(ValueError, match=r"differs in model\.\{head_dropout\}"):
    warm_start.warm_start_params(config, uninterrupted, zeros)
