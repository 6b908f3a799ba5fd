"""The family comparison (distill_jax/jobs/families.py): shared settings checked, one table."""

import os

import ml_collections
import pytest

from configs import families as families_config
from distill_jax.jobs import families
from tests.jobs.test_demo import _config, _hf_teacher


def test_the_shipped_families_share_corpus_teacher_and_schedule():
  config = families_config.get_config()
  assert list(families.ordered_families(config)) == ["ctc", "attention", "transducer"]
  families.check_shared(families.ordered_families(config))
  heads = {name: cfg.model.head for name, cfg in config.families.items()}
  assert heads == {"ctc": "ctc", "attention": "attention", "transducer": "transducer"}
  for cfg in config.families.values():  # the same steps of the same batches, no wall cap
    assert cfg.train.num_steps == families_config.STEPS and cfg.train.max_wall_minutes == 0
    assert cfg.data.batch_seconds == config.families.ctc.data.batch_seconds


def test_a_family_with_another_teacher_is_named():
  config = families_config.get_config()
  config.families.transducer.demo.teacher_hf = "teachers/other_hf"
  with pytest.raises(ValueError, match=r"families\.transducer\.demo\.teacher_hf='teachers/"
                                       r"other_hf' differs from config\.families\.ctc"):
    families.check_shared(families.ordered_families(config))
  config.order = ("ctc", "rnnt")
  with pytest.raises(ValueError, match=r"names \['rnnt'\], not in config.families"):
    families.ordered_families(config)


@pytest.mark.slow  # a teacher cache and four tiny students: 11 min on a loaded 2-core CPU
def test_two_families_train_with_and_without_kd_into_one_table(tiny_corpus, tmp_path):
  ctc = _config(tiny_corpus, tmp_path, teacher_hf=_hf_teacher(tmp_path / "teacher_hf"))
  ctc.eval.lm = ""
  ctc.train.update(num_steps=3, eval_every=3, checkpoint_every=3, warmup_steps=1)
  ctc.distill.update(gamma=0.5, layer_mapping="last_k", layer_k=1)
  transducer = ctc.copy_and_resolve_references()
  transducer.model.head = "transducer"
  transducer.model.aux_ctc = True
  config = ml_collections.ConfigDict(dict(name="fam", order=("transducer", "ctc"),
                                          families=dict(ctc=ctc, transducer=transducer)))
  workdir = str(tmp_path / "run")
  out = families.run(config, workdir)
  assert list(out["models"]) == ["teacher", "transducer KD", "transducer control",
                                 "ctc KD", "ctc control"]
  for name, row in out["models"].items():
    assert row["eval"]["greedy"]["test"]["utterances"] == 8, name
    if name != "teacher":
      assert row["steps"] == 3
  assert set(out["kd_over_control"]) == {"ctc", "transducer"}
  assert os.path.isdir(os.path.join(workdir, "transducer", "kd", "checkpoints"))
  table = open(os.path.join(workdir, "results.md")).read()
  assert "| transducer KD |" in table and "transducer " in table.splitlines()[-1]
