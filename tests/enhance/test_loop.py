"""enhance/loop.py: two steps on files (manifest + noise folder), dev evaluation, checkpoint,
metrics files; a second call resumes and trains nothing more."""

import json
import os

import numpy as np
import pytest
import soundfile as sf

from configs import enhance as enhance_config
from distill_jax.data import manifest
from distill_jax.enhance import inference, loop
from distill_jax.enhance import train as train_lib


def _write_data(root):
  rng = np.random.default_rng(0)
  t = np.arange(24000) / 16000
  utts = []
  for i, f0 in enumerate((140.0, 190.0, 240.0)):
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 8))
    x = 0.2 * x * np.clip(np.sin(2 * np.pi * 3 * t), 0, None)
    path = os.path.join(root, f"u{i}.wav")
    sf.write(path, x.astype(np.float32), 16000)
    utts.append(manifest.Utterance(id=f"u{i}", path=path, text="x", speaker=f"s{i}"))
  manifest.write_manifest(os.path.join(root, "clean.jsonl"), utts)
  os.makedirs(os.path.join(root, "noise"))
  for i in range(2):
    sf.write(os.path.join(root, "noise", f"n{i}.wav"),
             (0.1 * rng.standard_normal(20000)).astype(np.float32), 16000)


@pytest.mark.slow  # compiles init, both GAN steps, dev enhance and a resume: minutes on 2 CPUs
def test_two_steps_and_resume(tmp_path):
  _write_data(str(tmp_path))
  c = _tiny_config(tmp_path)
  c.train.update(num_steps=2, log_every=1, eval_every=2, warmup_steps=1)
  work = str(tmp_path / "run")
  summary = loop.train_and_evaluate(c, work)
  assert summary["step"] == 2 and np.isfinite(summary["dev"]["all/sisdr"])
  rows = [json.loads(line) for line in open(os.path.join(work, "metrics.jsonl"))]
  assert [r["step"] for r in rows if "train/loss" in r] == [1, 2]
  assert any("dev/snr0/estoi" in r for r in rows)
  assert os.path.isdir(os.path.join(work, "checkpoints", "2"))
  again = loop.train_and_evaluate(c, work)  # resumes at step 2: nothing left to train
  assert again["step"] == 2


def _tiny_config(tmp_path, variant="recon"):
  c = enhance_config.get_config(variant)
  c.progress = False
  c.model.update(window=128, hop=32, num_linear=8, num_erb=8, channels=(4, 8), hidden=16)
  c.loss.resolutions = ((256, 64, 256),)
  c.data.update(clean_train=str(tmp_path / "clean.jsonl"), clean_dev=str(tmp_path / "clean.jsonl"),
                noise_train=str(tmp_path / "noise"), noise_dev=str(tmp_path / "noise"),
                segment_seconds=0.25, batch_size=2, dev_snrs=(0.0,), dev_mixtures=2,
                dev_seconds=1.0)
  return c


def test_init_from_a_run_of_another_generator_is_an_error_naming_the_field(tmp_path):
  src = _tiny_config(tmp_path)
  os.makedirs(tmp_path / "src")
  with open(tmp_path / "src" / "config.json", "w") as f:
    f.write(src.to_json())
  c = _tiny_config(tmp_path, "gan,finetune")
  c.model.hidden = 24
  with pytest.raises(ValueError, match=r"differs in \['hidden'\]"):
    train_lib.warm_start_generator(c, str(tmp_path / "src") + "@latest")
  with pytest.raises(FileNotFoundError, match="config.json"):
    train_lib.warm_start_generator(c, str(tmp_path / "nowhere"))


def test_finetune_variant_needs_a_known_modifier():
  assert enhance_config.get_config("gan,finetune").train.num_steps == 500
  with pytest.raises(ValueError, match="finetune"):
    enhance_config.get_config("gan,fine")


@pytest.mark.slow  # two short runs: compiles the generator step twice
def test_finetune_starts_from_the_source_runs_generator(tmp_path):
  import jax
  _write_data(str(tmp_path))
  c = _tiny_config(tmp_path)
  c.train.update(num_steps=2, log_every=1, eval_every=2, warmup_steps=1)
  loop.train_and_evaluate(c, str(tmp_path / "src"))
  ft = _tiny_config(tmp_path, "recon,finetune")
  ft.train.update(num_steps=1, log_every=1, eval_every=1, warmup_steps=1,
                  init_from=str(tmp_path / "src") + "@2")
  models = train_lib.build_models(ft)
  warm = train_lib.warm_start_generator(ft, ft.train.init_from)
  fresh = train_lib.init_state(ft, models, ft.seed, 256)
  diffs = jax.tree_util.tree_map(lambda a, b: float(np.max(np.abs(a - b))), warm["g_params"],
                                 fresh.g_params)
  assert max(jax.tree_util.tree_leaves(diffs)) > 0  # two updates moved it off the init
  _, params, _ = inference.load_run(str(tmp_path / "src"), 2)
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, warm["g_params"])
  summary = loop.train_and_evaluate(ft, str(tmp_path / "ft"))
  assert summary["step"] == 1 and np.isfinite(summary["dev"]["all/sisdr"])
