"""The README's main job end to end on the tiny corpus: train, greedy and LM evaluation, table."""

import json
import os

from configs import corpus as corpus_configs
from distill_jax import demo
from tests.train import tiny_config


def test_demo_runs_end_to_end_with_lm(tiny_corpus, tmp_path):
  config = tiny_config.get_config(tiny_corpus)
  config.data.corpus_dir = tiny_corpus
  config.data.corpus = corpus_configs.get_corpus_config("tiny")
  config.data.real_english_folders = ()
  config.data.real_english = str(tmp_path / "real_english.jsonl")
  config.eval.splits = ("test",)
  config.eval.lm = str(tmp_path / "lm2.arpa")
  config.eval.lm_order = 2
  config.eval.beam_size = 4
  config.train.update(num_steps=6, eval_every=6, checkpoint_every=6)
  workdir = str(tmp_path / "run")
  out = demo.run(config, workdir)
  assert os.path.exists(config.eval.lm)
  assert set(out["eval"]) == {"greedy", "beam 4 + 2-gram LM"}
  for results in out["eval"].values():
    assert results["test"]["utterances"] == 8
    assert 0.0 <= results["test"]["cer"]
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f)["steps"] == 6
  with open(os.path.join(workdir, "results.md")) as f:
    table = f.read()
  assert "test WER / CER, greedy" in table and "2-gram LM" in table
