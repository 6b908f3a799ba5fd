"""Tests of the CTranslate2 Whisper -> Hugging Face importer (distill_jax/convert/ct2_whisper.py).

A tiny random `WhisperForConditionalGeneration` (d_model 64, 2 + 2 layers, 4 heads, every tensor
random so that no two are equal and CTranslate2 aliases none of them) and a tiny byte-level BPE
`WhisperTokenizer` (256 bytes, 3 merges, Whisper's special tokens, 20 timestamp tokens) are saved
with `save_pretrained` and converted once per module with ctranslate2's `TransformersConverter`
to float32, float16 and int8; each is imported back and compared with the original state dict:

  float32: every tensor exactly equal.
  float16: every tensor exactly equal to the original rounded to float16 (round to nearest even,
           relative error <= 2**-11 for normal numbers), i.e. the import itself loses nothing.
  int8:    quantized weights within half a quantization step of their row (amax(row) / 254,
           CTranslate2's per-row scale 127 / amax); biases, norms and position tables exact.
The float32 import is also run against CTranslate2's own runtime: logits of a greedy decode agree
within 1e-5 absolute (float32 logits of magnitude ~1), also after a nonzero key bias (which the
importer drops) is written into the CTranslate2 model. Errors: a folder without model.bin, a
truncated or foreign file, a missing tensor, an int8 weight without its scale, another
architecture's spec and a missing tokenizer.json are each named.
"""

# pylint: disable=import-outside-toplevel  (torch, transformers, ctranslate2 are optional)

import json
import os
import shutil
import struct

import numpy as np
import pytest

from distill_jax.convert import ct2_whisper as cw

LOGIT_ATOL = 1e-5
N_TIMESTAMPS = 20
SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|de|>", "<|translate|>",
            "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>",
            "<|notimestamps|>"]


def _deps():
  pytest.importorskip("torch", reason="reference test needs torch (requirements-reference.txt)")
  pytest.importorskip("transformers", reason="reference test needs transformers")
  return pytest.importorskip("ctranslate2", reason="needs ctranslate2 (its converter makes the "
                             "CTranslate2 models)")


def _tiny_tokenizer():
  from transformers import WhisperTokenizer
  from transformers.convert_slow_tokenizer import bytes_to_unicode
  b2u = bytes_to_unicode()
  vocab = {b2u[b]: b for b in range(256)}
  merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he")]
  for a, b in merges:
    vocab[a + b] = len(vocab)
  tok = WhisperTokenizer(vocab=vocab, merges=merges)  # adds <|endoftext|> as bos/eos/unk
  tok.add_special_tokens({"additional_special_tokens": SPECIALS[1:]})
  return tok


@pytest.fixture(scope="module", name="ct2")
def _ct2(tmp_path_factory):
  """{"hf": folder, "state": original state dict (numpy), "gen": original generation config,
  "float32"/"float16"/"int8": CTranslate2 folders}."""
  ctranslate2 = _deps()
  import torch
  from transformers import WhisperConfig, WhisperForConditionalGeneration
  root = tmp_path_factory.mktemp("ct2_whisper")
  tok = _tiny_tokenizer()
  ids = dict(zip(SPECIALS, tok.convert_tokens_to_ids(SPECIALS)))
  eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
  cfg = WhisperConfig(
      vocab_size=len(tok) + N_TIMESTAMPS, num_mel_bins=8, d_model=64, encoder_layers=2,
      decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=96,
      decoder_ffn_dim=96, max_source_positions=16, max_target_positions=12, pad_token_id=eot,
      bos_token_id=eot, eos_token_id=eot, decoder_start_token_id=sot)
  torch.manual_seed(0)
  model = WhisperForConditionalGeneration(cfg).eval()
  with torch.no_grad():
    for p in model.parameters():  # every tensor random: none equal, none aliased by CTranslate2
      p.copy_(0.2 * torch.randn_like(p))
  gen = model.generation_config
  gen.suppress_tokens = [1, 2, 7]
  gen.begin_suppress_tokens = [220, eot]
  gen.alignment_heads = [[1, 0], [1, 3]]
  gen.lang_to_id = {"<|en|>": ids["<|en|>"], "<|de|>": ids["<|de|>"]}
  gen.task_to_id = {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}
  hf = str(root / "hf")
  model.save_pretrained(hf)
  tok.save_pretrained(hf)
  out = {"hf": hf, "gen": gen, "tokenizer": tok,
         "state": {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}}
  for q in ("float32", "float16", "int8"):
    out[q] = str(root / f"ct2_{q}")
    ctranslate2.converters.TransformersConverter(hf, copy_files=["tokenizer.json"]).convert(
        out[q], quantization=q)
  return out


# ---------------------------------------------------------------------------------------------
# `_write_model_bin` re-serializes a parsed model.bin (CTranslate2's format v6), to make broken
# or modified models for the named-error tests.


def _write_model_bin(path: str, model: cw.Ct2Model, *, spec: str | None = None,
                     drop: tuple[str, ...] = (), replace: dict | None = None) -> None:
  ids = {"float32": 0, "int8": 1, "int16": 2, "int32": 3, "float16": 4, "bfloat16": 5}

  def string(s):
    b = s.encode("utf-8") + b"\0"
    return struct.pack("<H", len(b)) + b

  variables = {k: v for k, v in {**model.variables, **(replace or {})}.items() if k not in drop}
  parts = [struct.pack("<I", 6), string(spec or model.spec), struct.pack("<I", model.revision),
           struct.pack("<I", len(variables))]
  for name, x in variables.items():
    parts += [string(name), struct.pack("<B", x.ndim), struct.pack(f"<{x.ndim}I", *x.shape),
              struct.pack("<BI", ids[model.dtypes[name]], x.nbytes), x.tobytes()]
  parts.append(struct.pack("<I", len(model.aliases)))
  for alias, target in model.aliases.items():
    parts += [string(alias), string(target)]
  with open(path, "wb") as f:
    f.write(b"".join(parts))


def _modified_copy(src: str, dst: str, edit=None, **changes) -> str:
  """Copies a CTranslate2 folder, its model.bin re-serialized with `_write_model_bin(...,
  **changes)`; `edit(model)` may first return {name: array} replacements."""
  shutil.copytree(src, dst, ignore=shutil.ignore_patterns(cw.MODEL_BIN))
  model = cw.read_model_bin(os.path.join(src, cw.MODEL_BIN))
  if edit is not None:
    changes["replace"] = edit(model)
  _write_model_bin(os.path.join(dst, cw.MODEL_BIN), model, **changes)
  return dst


def _imported_state(folder: str) -> dict[str, np.ndarray]:
  from safetensors.numpy import load_file
  state = load_file(os.path.join(folder, cw.SAFETENSORS))
  with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
    if json.load(f)["tie_word_embeddings"]:
      state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]
  return state


@pytest.mark.torch
def test_float32_round_trip_is_exact(ct2, tmp_path):
  from transformers import WhisperForConditionalGeneration
  out = str(tmp_path / "hf")
  summary = cw.convert(ct2["float32"], out)
  assert summary["spec"] == "WhisperSpec" and summary["stored_dtypes"] == {"float32": 75}
  assert summary["sizes"]["encoder_attention_heads"] == 4 and summary["notes"] == []
  state = _imported_state(out)
  assert set(state) == set(ct2["state"])
  for k, v in ct2["state"].items():
    assert state[k].dtype == np.float32 and state[k].shape == v.shape, k
    np.testing.assert_array_equal(state[k], v, err_msg=k)
  model, info = WhisperForConditionalGeneration.from_pretrained(out, output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  assert not info["mismatched_keys"], info
  assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()


def _runtime_and_hf_logits(ct2_dir: str, hf_dir: str, tokenizer):
  """(CTranslate2 runtime's logits of its greedy decode, transformers' logits on the same
  tokens, the tokens) for random features."""
  import ctranslate2
  import torch
  from transformers import WhisperForConditionalGeneration
  model = WhisperForConditionalGeneration.from_pretrained(hf_dir).eval()
  runtime = ctranslate2.models.Whisper(ct2_dir, device="cpu", compute_type="float32")
  feats = np.random.default_rng(0).standard_normal((1, 8, 32)).astype(np.float32)
  prompt = tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", "<|notimestamps|>"])
  res = runtime.generate(ctranslate2.StorageView.from_array(feats), [prompt], beam_size=1,
                         max_length=12, suppress_blank=False, suppress_tokens=[],
                         return_logits_vocab=True)[0]
  seq = res.sequences_ids[0]
  ct_logits = np.stack([np.asarray(x).reshape(-1) for x in res.logits[0]])
  with torch.no_grad():
    logits = model(input_features=torch.from_numpy(feats),
                   decoder_input_ids=torch.tensor([prompt + seq])).logits[0].numpy()
  return ct_logits, logits[len(prompt) - 1:len(prompt) - 1 + len(seq)], seq


@pytest.mark.torch
def test_logits_match_ctranslate2_runtime(ct2, tmp_path):
  out = str(tmp_path / "hf")
  cw.convert(ct2["float32"], out)
  ct_logits, logits, seq = _runtime_and_hf_logits(ct2["float32"], out, ct2["tokenizer"])
  assert len(seq) >= 4 and ct_logits.shape == (len(seq), ct2["state"]["proj_out.weight"].shape[0])
  np.testing.assert_allclose(logits, ct_logits, atol=LOGIT_ATOL, rtol=0)
  np.testing.assert_array_equal(ct_logits.argmax(-1), seq)  # the greedy path itself


@pytest.mark.torch
def test_nonzero_key_bias_is_dropped_without_changing_logits(ct2, tmp_path):
  """CTranslate2 fuses a (zero) key bias into linear_0; a nonzero one is dropped, and the
  runtime, which applies it, still agrees (softmax cancels q . b_k)."""
  name = "decoder/layer_1/self_attention/linear_0/bias"

  def key_bias(model):
    bias = model.variables[name].copy()
    bias[64:128] = np.linspace(-1.0, 1.0, 64)  # the key third of [q, k, v]
    return {name: bias}
  folder = _modified_copy(ct2["float32"], str(tmp_path / "ct2"), key_bias)
  out = str(tmp_path / "hf")
  summary = cw.convert(folder, out)
  assert any("key-projection bias (max |b| = 1)" in n for n in summary["notes"]), summary
  ct_logits, logits, _ = _runtime_and_hf_logits(folder, out, ct2["tokenizer"])
  np.testing.assert_allclose(logits, ct_logits, atol=LOGIT_ATOL, rtol=0)


@pytest.mark.torch
def test_float16_import_loses_nothing_beyond_fp16_rounding(ct2, tmp_path):
  out = str(tmp_path / "hf")
  summary = cw.convert(ct2["float16"], out)
  assert summary["stored_dtypes"] == {"float16": 75}  # 75 tensors + 1 alias
  state = _imported_state(out)
  for k, v in ct2["state"].items():
    rounded = v.astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(state[k], rounded, err_msg=k)
    normal = np.abs(v) >= np.finfo(np.float16).tiny
    assert np.all(np.abs(state[k] - v)[normal] <= 2.0**-11 * np.abs(v)[normal]), k


@pytest.mark.torch
def test_int8_is_dequantized_within_half_a_step(ct2, tmp_path):
  out = str(tmp_path / "hf")
  summary = cw.convert(ct2["int8"], out)
  assert summary["stored_dtypes"]["int8"] > 0
  state = _imported_state(out)
  quantized = 0
  for k, v in ct2["state"].items():
    if k.endswith(".weight") and "layer_norm" not in k and "embed_positions" not in k:
      rows = v.reshape(v.shape[0], -1)
      step = np.abs(rows).max(axis=1, keepdims=True) / 127.0
      err = np.abs(state[k].reshape(rows.shape) - rows)
      assert np.all(err <= 0.5 * step * (1 + 1e-5) + 1e-7), (k, float((err / step).max()))
      assert np.any(err > 0), k  # it was quantized indeed
      quantized += 1
    else:
      np.testing.assert_array_equal(state[k], v, err_msg=k)
  # convs 2, embed_tokens + proj_out 2, encoder 2 x (q, k, v, out, fc1, fc2), decoder 2 x 10.
  assert quantized == 2 + 2 + 2 * 6 + 2 * 10


@pytest.mark.torch
def test_tokenizer_and_generation_config(ct2, tmp_path):
  from transformers import GenerationConfig, WhisperProcessor, WhisperTokenizer
  from transformers import WhisperTokenizerFast
  out = str(tmp_path / "hf")
  cw.convert(ct2["float32"], out)
  orig = WhisperTokenizer.from_pretrained(ct2["hf"])  # as saved, the converter's input
  vocab_size = ct2["state"]["proj_out.weight"].shape[0]
  for cls in (WhisperTokenizer, WhisperTokenizerFast):
    tok = cls.from_pretrained(out)
    assert len(tok) == vocab_size
    sample = " the theme, it's 10 o'clock"
    assert tok(sample).input_ids == orig(sample).input_ids
    ids = tok(sample).input_ids
    assert tok.decode(ids, skip_special_tokens=True) == sample
    assert tok.convert_ids_to_tokens(vocab_size - 1) == f"<|{0.02 * (N_TIMESTAMPS - 1):.2f}|>"
  processor = WhisperProcessor.from_pretrained(out)
  assert processor.feature_extractor.feature_size == 8
  gen = GenerationConfig.from_pretrained(out)
  want = ct2["gen"]
  assert gen.decoder_start_token_id == orig.convert_tokens_to_ids("<|startoftranscript|>")
  assert gen.eos_token_id == orig.convert_tokens_to_ids("<|endoftext|>")
  assert gen.no_timestamps_token_id == orig.convert_tokens_to_ids("<|notimestamps|>")
  assert gen.suppress_tokens == want.suppress_tokens
  assert gen.begin_suppress_tokens == want.begin_suppress_tokens
  with open(os.path.join(ct2["float32"], "config.json"), encoding="utf-8") as f:
    ct2_config = json.load(f)
  assert gen.alignment_heads == ct2_config["alignment_heads"]
  assert gen.is_multilingual is False and not hasattr(gen, "lang_to_id")  # 289 < 51865 tokens
  out_ml = str(tmp_path / "hf_ml")
  cw.convert(ct2["float32"], out_ml, multilingual=True)
  gen = GenerationConfig.from_pretrained(out_ml)
  assert gen.is_multilingual is True
  assert gen.lang_to_id == want.lang_to_id and gen.task_to_id == want.task_to_id


# ---------------------------------------------------------------------------------------------
# The format, and named errors.


@pytest.mark.torch
def test_rewritten_model_bin_reads_back_identically(ct2, tmp_path):
  model = cw.read_model_bin(os.path.join(ct2["int8"], cw.MODEL_BIN))
  path = str(tmp_path / cw.MODEL_BIN)
  _write_model_bin(path, model)
  with open(path, "rb") as f, open(os.path.join(ct2["int8"], cw.MODEL_BIN), "rb") as g:
    assert f.read() == g.read()  # the format is understood byte for byte


@pytest.mark.torch
@pytest.mark.parametrize("quantization,changes,error", [
    ("float32", dict(drop=("decoder/layer_1/attention/linear_1/weight",)),
     r"missing tensors.*decoder/layer_1/attention/linear_1/weight"),
    ("int8", dict(drop=("encoder/layer_0/ffn/linear_0/weight_scale",)),
     r"encoder/layer_0/ffn/linear_0/weight_scale"),
    ("float32", dict(spec="Wav2Vec2Spec"), r"not a Whisper model.*'Wav2Vec2Spec'"),
], ids=["missing_tensor", "int8_without_scale", "other_architecture"])
def test_broken_model_bin_is_named(ct2, tmp_path, quantization, changes, error):
  folder = _modified_copy(ct2[quantization], str(tmp_path / "ct2"), **changes)
  with pytest.raises(cw.Ct2WhisperError, match=error):
    cw.convert(folder, str(tmp_path / "hf"))


@pytest.mark.torch
def test_missing_tokenizer_json_is_named(ct2, tmp_path):
  folder = shutil.copytree(ct2["float32"], str(tmp_path / "ct2"))
  os.remove(os.path.join(folder, "tokenizer.json"))
  with pytest.raises(cw.Ct2WhisperError, match=r"tokenizer\.json does not exist"):
    cw.convert(folder, str(tmp_path / "hf"))


def test_folder_without_model_bin_and_truncated_file(tmp_path):  # no torch needed
  (tmp_path / "ct2").mkdir()
  with pytest.raises(cw.Ct2WhisperError, match=r"has no model\.bin"):
    cw.convert(str(tmp_path / "ct2"), str(tmp_path / "hf"))
  path = tmp_path / "ct2" / cw.MODEL_BIN
  path.write_bytes(struct.pack("<I", 6) + struct.pack("<H", 12) + b"WhisperSpec\0"
                   + struct.pack("<II", 3, 1) + struct.pack("<H", 40) + b"encoder")
  with pytest.raises(cw.Ct2WhisperError, match=r"model\.bin is truncated: reading the name of "
                     r"variable 0"):
    cw.read_model_bin(str(path))
  path.write_bytes(b"PK\x03\x04 not a model")
  with pytest.raises(cw.Ct2WhisperError, match=r"binary version \d+ is not supported"):
    cw.read_model_bin(str(path))
