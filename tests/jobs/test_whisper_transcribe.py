"""Whisper pseudo-labels (jobs/whisper_transcribe.py): batched decoding of a manifest, the WER
filter against references, resuming after a kill, and training on the result
(config.distill.hard_labels='whisper').

A tiny random Whisper folder (tests/models/whisper_tiny.py's architecture: 2 s window, 300 ids)
written with `hf_whisper.save_hf_folder` (no torch, no network), ids turned into letters by a
stand-in detokenizer (ids 0..249 -> a..z, 220 -> a space, special ids -> nothing).
"""

import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from configs import base
from distill_jax import text
from distill_jax.audio import whisper_features
from distill_jax.convert import hf_whisper
from distill_jax.data import manifest as manifest_lib
from distill_jax.data import pipeline
from distill_jax.data import pseudo_labels as pl
from distill_jax.decode import whisper as dec
from distill_jax.jobs import whisper_transcribe as wt
from distill_jax.models import whisper as whisper_lib
from distill_jax.models.whisper_teacher import WhisperCtcTeacher
from distill_jax.text import whisper as text_whisper
from distill_jax.train import teacher as run_teacher
from tests.models import test_whisper_ctc
from tests.models import whisper_tiny as tiny

SECONDS = (1.5, 1.2, 0.9, 0.7, 0.5, 2.5)  # the last is longer than the 2 s window
MAX_NEW = 6
KW = dict(batch_size=2, max_new_tokens=MAX_NEW, progress=False)


def detokenize(ids):
  return "".join(" " if i == tiny.BLANK else chr(ord("a") + i % 26) if i < 250 else ""
                 for i in ids)


def _manifest(folder, name, refs):
  utts = [manifest_lib.Utterance(f"u{i}", os.path.join(folder, f"u{i}.flac"), ref,
                                 duration=SECONDS[i]) for i, ref in enumerate(refs)]
  path = os.path.join(folder, name)
  manifest_lib.write_manifest(path, utts)
  return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """The folder, the Whisper folder, run 1 (no references) and run 2 (references)."""
  folder = str(tmp_path_factory.mktemp("transcribe"))
  cfg = tiny.flax_config()
  gen = {"decoder_start_token_id": tiny.SOT, "eos_token_id": tiny.EOS,
         "suppress_tokens": list(cfg.suppress_tokens),
         "begin_suppress_tokens": list(cfg.begin_suppress_tokens),
         **tiny.generation_fields("en")}
  whisper_dir = hf_whisper.save_hf_folder(cfg, whisper_lib.init_params(cfg, seed=1),
                                          os.path.join(folder, "whisper"), gen)
  rng = np.random.default_rng(0)
  for i, secs in enumerate(SECONDS):
    n = int(secs * 16000)
    tone = np.sin(2 * np.pi * (200 + 150 * i) * np.arange(n) / 16000)
    sf.write(os.path.join(folder, f"u{i}.flac"),
             (0.3 * tone + 0.05 * rng.standard_normal(n)).clip(-1, 1), 16000)
  m1 = _manifest(folder, "unlabelled.jsonl", [""] * len(SECONDS))
  out1 = os.path.join(folder, "out1.jsonl")
  r1 = wt.transcribe_manifest(whisper_dir, m1, out1, detokenize=detokenize, **KW)
  hyps = {row["id"]: row for row in map(json.loads, open(out1))}
  # References: right for u0 and u1, wrong for u2 and u3, none for u4.
  refs = [hyps["u0"]["whisper_text"], hyps["u1"]["whisper_text"], "QQQ ZZZ", "QQQ", "", "X"]
  m2 = _manifest(folder, "labelled.jsonl", refs)
  out2 = os.path.join(folder, "out2.jsonl")
  r2 = wt.transcribe_manifest(whisper_dir, m2, out2, max_wer=0.1, detokenize=detokenize, **KW)
  return dict(folder=folder, whisper=whisper_dir, r1=r1, hyps=hyps, m2=m2, out2=out2, r2=r2,
              gen=gen)


def test_transcripts_are_whisper_decoding_each_clip_alone(runs):
  assert runs["r1"]["num_input"] == 6 and runs["r1"]["decoded"] == 6
  assert runs["r1"]["dropped_by_reason"] == {"too_long": 1}
  assert set(runs["hyps"]) == {f"u{i}" for i in range(5)}
  cfg, params = hf_whisper.load_hf_folder(runs["whisper"])
  settings = dec.decode_settings(cfg, runs["gen"], max_new_tokens=MAX_NEW)
  model = whisper_lib.WhisperForConditionalGeneration(cfg)
  window = cfg.num_frames * whisper_features.HOP_LENGTH
  for uid in ("u0", "u4"):  # the longest and the shortest, alone in a batch of one
    wav, _ = sf.read(os.path.join(runs["folder"], f"{uid}.flac"), dtype="float32")
    feats, _ = whisper_features.log_mel_spectrogram(jnp.asarray(wav)[None], num_samples=window)
    raw = detokenize(dec.token_lists(dec.generate(model, params, feats, settings))[0])
    row = runs["hyps"][uid]
    assert row["whisper_text"] == raw and raw
    assert row["text"] == text_whisper.normalize_whisper(raw) and row["text"]
    assert row["reference"] == "" and row["wer"] is None and row["label_source"] == "whisper"


def test_wer_filter_against_references_lists_dropped_ids(runs):
  r2 = runs["r2"]
  assert r2["num_kept"] == 3 and r2["num_with_reference"] == 4  # u5 was not decoded
  assert [(d["id"], d["reason"]) for d in r2["dropped"]] == [
      ("u2", "wer"), ("u3", "wer"), ("u5", "too_long")]
  assert all(d["wer"] > 0.1 for d in r2["dropped"][:2])
  kept = manifest_lib.read_manifest(runs["out2"])
  assert [u.id for u in kept] == ["u0", "u1", "u4"]
  assert [u.text for u in kept] == [runs["hyps"][u]["text"] for u in ("u0", "u1", "u4")]
  with open(runs["out2"] + pl.REPORT_SUFFIX) as f:
    assert json.load(f)["dropped_by_reason"] == {"wer": 2, "too_long": 1}


def test_a_killed_run_resumes_without_decoding_finished_batches(runs, tmp_path):
  out = str(tmp_path / "out.jsonl")
  shutil.copy(runs["out2"] + pl.PARTIAL_SUFFIX, out + pl.PARTIAL_SUFFIX)
  with open(out + pl.PARTIAL_SUFFIX) as f:
    lines = f.readlines()
  with open(out + pl.PARTIAL_SUFFIX, "w") as f:  # header + the first batch, then a torn line
    f.writelines(lines[:3])
    f.write(lines[3][:10])
  r = wt.transcribe_manifest(runs["whisper"], runs["m2"], out, max_wer=0.1,
                             detokenize=detokenize, **KW)
  assert (r["resumed"], r["decoded"]) == (2, 4)
  rows = lambda path: [dict(r, path=os.path.join(os.path.dirname(path), r["path"]))
                       for r in map(json.loads, open(path))]
  assert rows(out) == rows(runs["out2"])  # the same rows (paths absolute here: another folder)
  with pytest.raises(ValueError, match="made with other settings: beam_size=1 vs 2"):
    wt.transcribe_manifest(runs["whisper"], runs["m2"], out, beam_size=2,
                           detokenize=detokenize, **KW)


def test_whisper_mode_trains_on_whisper_transcripts(runs):
  """hard_labels='whisper': the student's CTC targets are Whisper's transcripts (not the
  references), and a train manifest that is not pseudo-labelled is refused."""
  tok = text.CharTokenizer()
  utts = manifest_lib.read_manifest(runs["out2"])
  buckets = pipeline.BucketSpec(boundaries=(2.0,), batch_seconds=8.0)
  ds, _ = pipeline.prepare_dataset(utts, tok, buckets, progress=False, num_threads=1)
  refs = {u.id: u.text for u in manifest_lib.read_manifest(runs["m2"])}
  for ex in ds.examples:
    np.testing.assert_array_equal(ex.labels, tok.encode(runs["hyps"][ex.id]["text"]))
    assert ex.id == "u4" or runs["hyps"][ex.id]["text"] == text.normalize(refs[ex.id])
  batch = next(iter(pipeline.eval_batches(ds)))
  assert sorted(str(i) for i in batch["ids"] if str(i)) == ["u0", "u1", "u4"]

  c = base.get_config()
  c.distill.hard_labels = "whisper"
  teacher = run_teacher.RunTeacher(
      path="", fingerprint="", layers=(),
      teacher=WhisperCtcTeacher(test_whisper_ctc.tiny_model(tok.vocab_size), None, tok.vocab))
  c.data.train = runs["m2"]
  with pytest.raises(ValueError, match=r"hard_labels='whisper' .*labelled.jsonl.* not a "
                                       r"manifest made by launch.whisper_transcribe"):
    run_teacher.kd_spec(c, teacher)
  c.data.train = runs["out2"]
  assert run_teacher.kd_spec(c, teacher).hard_labels == "whisper"


def test_tokenizer_json_decodes_ids_and_its_absence_is_named(tmp_path):
  tokenizers = pytest.importorskip("tokenizers", reason="tokenizer.json needs `tokenizers` "
                                   "(requirements-reference.txt)")
  vocab = {"<|endoftext|>": 0, "hello": 1, "world": 2, "[UNK]": 3}
  tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
  tok.add_special_tokens(["<|endoftext|>"])
  tok.save(str(tmp_path / "tokenizer.json"))
  decode, encode = wt.load_tokenizer(str(tmp_path))
  assert encode("hello world") == [1, 2]
  assert decode([1, 2, 0]) == "hello world"  # special tokens skipped
  with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
    wt.load_tokenizer(str(tmp_path / "absent"))
