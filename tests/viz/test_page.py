"""End to end: a tiny distillation run that keeps snapshots -> page data -> one HTML file."""

import json
import os
import re
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.losses import kl
from distill_jax.train import checkpoint as ckpt_lib
from distill_jax.jobs import latent_page
from distill_jax.viz import page
from tests.viz import tiny_run

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_keep_every_keeps_snapshots(kd_run):
  ckpt = ckpt_lib.Checkpointer(kd_run, read_only=True)
  assert ckpt.all_steps() == [2, 4, 6, 8, 10, 12]
  ckpt.close()


@pytest.mark.slow  # heavy: keeps the default run under 20 minutes
def test_page_data_is_consistent(kd_run):
  d = latent_page.compute_page_data(kd_run, split="test", utterances=3, fit_utterances=8)
  assert d.steps == [2, 4, 6, 8, 10, 12]
  m = d.meta
  # last_k=1 maps the student's last layer (1) to the teacher's last (2) through a projection.
  assert (m["student_layer"], m["teacher_layer"], m["mapping"]) == (1, 2, "kd_projection")
  assert m["frame_ratio"] == 2 and len(d.utterances) == 3
  assert d.cka.shape == (6, 3, 2) and np.all((d.cka >= -1e-5) & (d.cka <= 1 + 1e-5))
  np.testing.assert_allclose(d.mapped_cka, d.cka[:, 2, 1])
  evr = d.explained_variance_ratio
  assert np.all(np.diff(evr) <= 1e-6) and 0 < evr.sum() <= 1 + 1e-5
  for u in d.utterances:
    n = u.teacher_coords.shape[0]
    assert u.student_coords.shape == (6, n, evr.shape[0])
    assert u.student_probs.shape[:2] == (6, n) and u.kl.shape == (6, n) == u.distance.shape
    np.testing.assert_allclose(u.student_probs.sum(-1), 1.0, atol=1e-4)
    assert len(u.frame_chars) == n and len(u.student_decodes) == 6
    assert np.all(u.kl >= -1e-5) and np.all(u.distance >= 0)
    # Words cover the transcript in order, inside the audio.
    if not u.align_note:
      assert " ".join(w for w, _, _ in u.words) == u.text
      ends = [b for _, _, b in u.words]
      assert ends == sorted(ends) and ends[-1] <= len(u.audio) / 16000 + 0.05
  assert -1 <= m["distance_correlation"] <= 1 and m["gap_in_plane"] > 0


def test_frame_kl_matches_the_training_loss_term():
  rng = np.random.default_rng(0)
  s = jnp.asarray(rng.normal(size=(7, 32)), jnp.float32)
  t = jax_log_softmax(rng.normal(size=(7, 32)))
  per_frame = latent_page.frame_kl(np.asarray(s), np.asarray(t), 2.0)
  ref = kl.kl_divergence(s[None], t[None], jnp.zeros((1, 7)), 2.0)
  np.testing.assert_allclose(per_frame.mean(), float(ref["loss"]), rtol=1e-5)


def jax_log_softmax(x):
  x = np.asarray(x, np.float32)
  return jnp.asarray(x - np.log(np.sum(np.exp(x), -1, keepdims=True)))


@pytest.mark.slow  # 90 s of extra training
def test_procrustes_mapping_without_a_kd_projection(tiny_corpus, viz_teacher_folder, tmp_path):
  workdir = str(tmp_path / "kd_nohidden")
  tiny_run.tiny_distill_run(tiny_corpus, viz_teacher_folder, workdir, gamma=0.0)
  d = latent_page.compute_page_data(workdir, split="test", utterances=1, fit_utterances=4)
  assert d.meta["mapping"] == "procrustes" and d.meta["kd_pairs"] == []
  assert (d.meta["student_layer"], d.meta["teacher_layer"]) == (1, 2)


@pytest.mark.slow  # heavy: keeps the default run under 20 minutes
def test_launch_writes_a_self_contained_page(kd_run, tmp_path):
  out = str(tmp_path / "latent.html")
  res = subprocess.run(
      [sys.executable, "-m", "launch.visualize", f"--workdir={kd_run}", "--split=test",
       "--utterances=2", "--fit_utterances=8", f"--out={out}"],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert res.returncode == 0, res.stderr[-3000:]
  info = json.loads(res.stdout[res.stdout.index("{"):])
  assert info["checkpoints"] == 6 and info["utterances"] == 2
  html = open(out, encoding="utf-8").read()
  # Offline: no external reference of any kind (scripts, styles, fonts, images, fetches).
  assert not re.search(r"(src|href)\s*=\s*[\"'](?!data:|#)", html.replace('href = URL', ''))
  assert "http://" not in html and "https://" not in html
  blob = html[html.index('type="application/json">') + 24:html.index("</script>")]
  d = json.loads(blob)
  assert len(d["utterances"]) == 2 and d["steps"] == [2, 4, 6, 8, 10, 12]
  vecs = open(info["projector"][0]).read().rstrip("\n").split("\n")
  meta = open(info["projector"][1]).read().rstrip("\n").split("\n")
  assert meta[0].split("\t")[-1] == "__seq_next__" and len(meta) == len(vecs) + 1
  # __seq_next__ links each frame to the next row of its own sequence.
  rows = [r.split("\t") for r in meta[1:]]
  for i, r in enumerate(rows):
    if r[-1]:
      nxt = rows[int(r[-1])]
      assert nxt[:2] == r[:2] and int(nxt[2]) == int(r[2]) + 1


def test_errors_are_named(tiny_corpus, tmp_path):
  with pytest.raises(FileNotFoundError, match="no checkpoints"):
    latent_page.run_config(str(tmp_path))
  with pytest.raises(ValueError, match="non-finite"):
    page.f16(np.array([np.nan]))
