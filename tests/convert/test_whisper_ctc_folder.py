"""The Whisper teacher's folder (convert/whisper_ctc_folder.py): a CTC head beside a Whisper
Hugging Face folder, read back into the `Teacher` interface through `teacher_folder.load_folder`.
Tiny random Whisper folders written by `hf_whisper.save_hf_folder` (no torch, no network)."""

from __future__ import annotations

import functools
import json
import os

import jax
import numpy as np
import pytest
import safetensors.numpy

from distill_jax import text as text_lib
from distill_jax.convert import hf_whisper, teacher_folder, whisper_ctc_folder
from distill_jax.models import whisper as whisper_lib
from distill_jax.models.whisper_teacher import WhisperCtcTeacher
from tests.models import test_whisper_ctc as tiny

VOCAB = text_lib.CharTokenizer().vocab
_model = functools.partial(tiny.tiny_model, len(VOCAB))


@pytest.fixture(name="folders")
def _folders(tmp_path):
  """(whisper folder, teacher folder, head params) with the head on that folder's encoder."""
  whisper_dir = hf_whisper.save_hf_folder(tiny.TINY, whisper_lib.init_params(tiny.TINY, seed=1),
                                          str(tmp_path / "whisper"))
  _, hf_params = hf_whisper.load_hf_folder(whisper_dir)
  model = _model()
  params = {**tiny.tiny_params(model), "encoder": hf_params["model"]["encoder"]}
  out = str(tmp_path / "teacher")
  whisper_ctc_folder.save_folder(out, model, params, VOCAB, whisper_dir)
  return whisper_dir, out, params


def test_round_trip_gives_the_same_posteriors(folders):
  _, out, params = folders
  teacher, tokenizer = teacher_folder.load_folder(out)
  assert isinstance(teacher, WhisperCtcTeacher) and tokenizer.vocab == VOCAB
  with open(os.path.join(out, whisper_ctc_folder.META)) as f:
    assert json.load(f)["whisper_folder"] == os.path.join("..", "whisper")
  wav, pad = tiny.audio_batch([9600], 9600)
  got = jax.jit(functools.partial(teacher.forward, layers=(1,)))(teacher.params, wav, pad)
  ref = jax.jit(_model().apply)({"params": params}, wav, pad)
  np.testing.assert_allclose(got.log_probs, jax.nn.log_softmax(ref["logits"]), atol=1e-6)
  np.testing.assert_allclose(got.hidden[0], ref["hidden_states"][1], atol=1e-6)


def test_bad_folders_are_named_errors(folders, tmp_path):
  whisper_dir, out, _ = folders
  other = hf_whisper.save_hf_folder(tiny.TINY, whisper_lib.init_params(tiny.TINY, seed=2),
                                    str(tmp_path / "other"))
  with pytest.raises(ValueError, match="not the one the head .* was trained on"):
    whisper_ctc_folder.load_folder(out, whisper_folder=other)
  with pytest.raises(FileNotFoundError, match="launch.import_whisper"):
    whisper_ctc_folder.load_folder(out, whisper_folder=str(tmp_path / "absent"))
  with pytest.raises(ValueError, match="is a Whisper folder: .* CTC head"):
    teacher_folder.load_folder(whisper_dir)
  meta_path = os.path.join(out, whisper_ctc_folder.META)
  with open(meta_path) as f:
    meta = json.load(f)
  meta["head"]["head_layers"] = 2
  with open(meta_path, "w") as f:
    json.dump(meta, f)
  with pytest.raises(ValueError, match=r"ctc_head/layers_1/.*missing there"):
    whisper_ctc_folder.load_folder(out)
  with pytest.raises(FileExistsError, match="choose an empty folder"):
    whisper_ctc_folder.save_folder(out, _model(), folders[2], {}, whisper_dir)


def test_tuned_encoder_layers_are_stored_and_the_rest_checked(tmp_path):
  """A head that tuned the top encoder layer stores that layer (and the final norm) and reads
  the others from the Whisper folder; a different frozen part is a named error."""
  whisper_dir = hf_whisper.save_hf_folder(tiny.TINY, whisper_lib.init_params(tiny.TINY, seed=1),
                                          str(tmp_path / "whisper"))
  _, hf_params = hf_whisper.load_hf_folder(whisper_dir)
  model = _model(tuned_layers=1)
  encoder = jax.tree.map(np.asarray, hf_params["model"]["encoder"])
  tuned = jax.tree.map(lambda x: x + 0.01, {"layers_1": encoder["layers_1"],
                                           "layer_norm": encoder["layer_norm"]})
  params = {**tiny.tiny_params(_model()), "encoder": {**encoder, **tuned}}
  out = str(tmp_path / "teacher")
  whisper_ctc_folder.save_folder(out, model, params, VOCAB, whisper_dir)
  stored = safetensors.numpy.load_file(os.path.join(out, whisper_ctc_folder.WEIGHTS))
  assert {k.split("/")[1] for k in stored if k.startswith("encoder/")} == {"layers_1",
                                                                           "layer_norm"}
  teacher, _ = teacher_folder.load_folder(out)
  wav, pad = tiny.audio_batch([9600], 9600)
  got = jax.jit(functools.partial(teacher.forward, layers=(1,)))(teacher.params, wav, pad)
  ref = jax.jit(model.apply)({"params": params}, wav, pad)
  np.testing.assert_allclose(got.log_probs, jax.nn.log_softmax(ref["logits"]), atol=1e-6)
  bad = {**params, "encoder": {**params["encoder"],
                               "conv1": jax.tree.map(lambda x: x + 1, encoder["conv1"])}}
  with pytest.raises(ValueError, match="not the one this head was trained on"):
    whisper_ctc_folder.save_folder(str(tmp_path / "bad"), model, bad, VOCAB, whisper_dir)


def test_float16_weights_halve_the_folder_and_read_back_close(folders, tmp_path):
  whisper_dir, out, params = folders
  half = str(tmp_path / "half")
  whisper_ctc_folder.save_folder(half, _model(), params, VOCAB, whisper_dir,
                                 weights_dtype="float16")
  size = lambda d: os.path.getsize(os.path.join(d, whisper_ctc_folder.WEIGHTS))
  assert size(half) < 0.55 * size(out)
  wav, pad = tiny.audio_batch([9600], 9600)
  full, _ = teacher_folder.load_folder(out)
  got, _ = teacher_folder.load_folder(half)
  a = jax.jit(functools.partial(full.forward, layers=()))(full.params, wav, pad).log_probs
  b = jax.jit(functools.partial(got.forward, layers=()))(got.params, wav, pad).log_probs
  np.testing.assert_allclose(b, a, atol=5e-3)  # float16 weights: about 1e-3 here
  assert np.abs(np.asarray(b) - np.asarray(a)).max() > 0.0
  with pytest.raises(ValueError, match="weights_dtype='int8' is not one of"):
    whisper_ctc_folder.save_folder(str(tmp_path / "x"), _model(), params, VOCAB, whisper_dir,
                                   weights_dtype="int8")
