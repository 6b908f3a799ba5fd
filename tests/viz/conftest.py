"""A tiny distillation run that keeps 6 student snapshots, shared by the viz tests."""

import pytest

from distill_jax import text as text_lib
from distill_jax.convert import hf_wav2vec2
from distill_jax.models import wav2vec2 as w2v
from tests.train import test_distill_loop
from tests.viz import tiny_run


@pytest.fixture(scope="session")
def viz_teacher_folder(tmp_path_factory):
  """The tiny random wav2vec2 CTC teacher of tests/train/test_distill_loop.py, as an HF folder."""
  cfg = test_distill_loop._teacher_config()
  out = str(tmp_path_factory.mktemp("viz_teacher"))
  return hf_wav2vec2.export_hf_folder(cfg, w2v.init_params(cfg, seed=3),
                                      text_lib.CharTokenizer(), out)


@pytest.fixture(scope="session")
def kd_run(tiny_corpus, viz_teacher_folder, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("kd_viz"))
  tiny_run.tiny_distill_run(tiny_corpus, viz_teacher_folder, workdir)
  return workdir
