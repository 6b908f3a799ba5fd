"""The README's main job end to end on the tiny corpus: teacher -> KD + control -> table."""

import json
import os
import subprocess
import sys

import pytest

from configs import corpus as corpus_configs
from distill_jax.jobs import demo
from distill_jax import text as text_lib
from distill_jax.convert import hf_wav2vec2, hf_whisper, teacher_folder, whisper_ctc_folder
from distill_jax.models import wav2vec2 as w2v
from distill_jax.models import whisper as whisper_lib
from distill_jax.train import state as state_lib
from tests.models import test_whisper_ctc as tiny
from tests.train import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(tiny_corpus, tmp_path, teacher_hf=""):
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
  config.demo.update(teacher_hf=teacher_hf, rtf_threads=0)
  return config


def _hf_teacher(folder, seed=3):
  cfg = w2v.Wav2Vec2Config(vocab_size=32, hidden_size=24, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=32, conv_dim=(8,) * 7,
                           num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                           feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)
  return hf_wav2vec2.export_hf_folder(cfg, w2v.init_params(cfg, seed=seed),
                                      text_lib.CharTokenizer(), str(folder))


@pytest.mark.slow  # heavy: keeps the default run under 20 minutes
def test_demo_without_teacher_trains_one_student_with_lm(tiny_corpus, tmp_path):
  config = _config(tiny_corpus, tmp_path)
  config.demo.rtf_threads = 1
  workdir = str(tmp_path / "run")
  out = demo.run(config, workdir)
  assert os.path.exists(config.eval.lm)
  assert list(out["models"]) == ["student"]
  student = out["models"]["student"]
  assert set(student["eval"]) == {"greedy", "beam 4 + 2-gram LM"}
  for results in student["eval"].values():
    assert results["test"]["utterances"] == 8 and results["test"]["skipped_ids"] == []
    assert 0.0 < results["test"]["cer"] <= results["test"]["wer"] * 5  # scored, not empty
  # Per-engine (and per-voice) breakdowns from the manifest's fields.
  by_engine = student["eval"]["greedy"]["test"]["by_engine"]
  assert set(by_engine) == {"flite", "espeak-ng", "hibari"}
  assert sum(g["utterances"] for g in by_engine.values()) == 8
  rtf = student["rtf"]  # measured by launch/rtf.py in a subprocess pinned to one CPU
  assert rtf["cpus"] == 1 and rtf["utterances"] == 8 and rtf["rtf"] > 0 and rtf["step"] == 6
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f)["models"]["student"]["steps"] == 6
  with open(os.path.join(workdir, "results.md")) as f:
    table = f.read()
  assert "test WER / CER, greedy" in table and "2-gram LM" in table


@pytest.fixture(scope="module")
def chain(tiny_corpus, tmp_path_factory):
  """One run of the whole chain (tiny random teacher), shared by the tests below."""
  tmp = tmp_path_factory.mktemp("chain")
  config = _config(tiny_corpus, tmp, teacher_hf=_hf_teacher(tmp / "teacher_hf"))
  config.eval.lm = ""
  # The KD student stops at step 4 of a 6-step schedule; the control must follow it there.
  config.train.update(max_wall_minutes=0.0, stop_at_step=4, warmup_steps=1, log_every=1)
  workdir = str(tmp / "run")
  return config, workdir, demo.run(config, workdir)


@pytest.mark.slow  # the chain fixture trains two students and caches a teacher: ~150 s
def test_demo_chain_converts_caches_distills_and_trains_the_control(chain):
  config, workdir, out = chain
  assert list(out["models"]) == ["teacher", "kd", "control"]
  # Converted like a hub checkpoint, then cached over the training split.
  with open(os.path.join(workdir, "teacher", "teacher.json")) as f:
    assert json.load(f)["source"] == config.demo.teacher_hf
  assert os.path.exists(os.path.join(workdir, "teacher_cache"))
  kd, control = out["models"]["kd"], out["models"]["control"]
  assert kd["steps"] == control["steps"] == 4 and kd["num_params"] == control["num_params"]
  assert out["models"]["teacher"]["eval"]["greedy"]["test"]["utterances"] == 8
  assert out["kd_over_control"] == pytest.approx(
      kd["eval"]["greedy"]["test"]["wer"] / control["eval"]["greedy"]["test"]["wer"])
  read = lambda name: [json.loads(l) for l in open(os.path.join(workdir, name, "metrics.jsonl"))]
  assert any("train/loss_kl" in r for r in read("kd"))
  assert not any("train/loss_kl" in r for r in read("control"))
  # Stopped at step 4 with the learning rate of the 6-step schedule, not of a 4-step one.
  lr = [r["train/lr"] for r in read("control") if r["step"] == 4 and "train/lr" in r]
  six = float(state_lib.learning_rate_schedule(config.train)(3))
  four = config.train.copy_and_resolve_references()
  four.num_steps = 4
  assert lr == [pytest.approx(six, rel=1e-5)] and six > 2 * float(
      state_lib.learning_rate_schedule(four)(3))
  table = open(os.path.join(workdir, "results.md")).read()
  assert "| teacher |" in table and "| kd |" in table and "| control |" in table
  assert "test WER by engine" in table


@pytest.mark.slow
def test_demo_second_run_trains_nothing_and_a_new_teacher_is_refused(chain):
  config, workdir, out = chain
  again = demo.run(config, workdir)
  assert again["models"]["kd"]["steps"] == 4 and again["models"]["control"]["steps"] == 4
  assert again["kd_over_control"] == out["kd_over_control"]
  other = config.copy_and_resolve_references()
  other.demo.teacher_hf = _hf_teacher(os.path.join(workdir, "..", "other_hf"), seed=4)
  with pytest.raises(ValueError, match="converted from other weights"):
    demo.run(other, workdir)


@pytest.mark.slow
def test_rtf_of_the_kd_student_runs_pinned_to_one_cpu(chain):
  config, workdir, _ = chain
  kd = demo.plan_students(config, workdir, os.path.join(workdir, "teacher"), None)["kd"][0]
  kd.demo.update(rtf_threads=1, rtf_split="test")
  out = demo.measure_rtf(kd, os.path.join(workdir, "rtf.json"),
                         workdir=os.path.join(workdir, "kd"))
  assert out["cpus"] == 1 and out["utterances"] == 8 and out["rtf"] > 0
  assert out["model"] == "student" and out["step"] == 4


def test_missing_teacher_folder_names_the_config_key(tiny_corpus, tmp_path):
  config = _config(tiny_corpus, tmp_path, teacher_hf=str(tmp_path / "nope"))
  with pytest.raises(FileNotFoundError, match="config.demo.teacher_hf"):
    demo.run(config, str(tmp_path / "run"))


def test_rtf_flags_are_checked():
  proc = subprocess.run([sys.executable, "-m", "launch.rtf", "--config=configs/demo.py"],
                        capture_output=True, text=True, cwd=REPO, check=False)
  assert proc.returncode != 0 and "exactly one of --workdir" in proc.stderr


def test_a_whisper_head_folder_is_the_teacher_as_it_is(tiny_corpus, tmp_path):
  """The main job takes a Whisper CTC-head folder as its teacher without converting it."""
  whisper_dir = hf_whisper.save_hf_folder(tiny.TINY, whisper_lib.init_params(tiny.TINY),
                                          str(tmp_path / "whisper"))
  _, hf_params = hf_whisper.load_hf_folder(whisper_dir)
  vocab = text_lib.CharTokenizer().vocab
  model = tiny.tiny_model(len(vocab))
  params = {**tiny.tiny_params(model), "encoder": hf_params["model"]["encoder"]}
  head_dir = str(tmp_path / "whisper_ctc")
  whisper_ctc_folder.save_folder(head_dir, model, params, vocab, whisper_dir)
  config = _config(tiny_corpus, tmp_path, teacher_hf=head_dir)
  assert demo.prepare_teacher(config, str(tmp_path / "run")) == head_dir
  assert not os.path.exists(tmp_path / "run" / "teacher")
  # What its results row counts: the encoder's and the head's parameters, as loaded.
  teacher, _ = teacher_folder.load_folder(head_dir)
  assert state_lib.count_params(teacher.params) == state_lib.count_params(params)
