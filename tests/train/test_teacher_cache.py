"""The offline teacher cache end to end: written by train/teacher_cache.py (any `Teacher`), read
by data/teacher_cache.py.

A tiny random wav2vec2 teacher (stable-layer-norm family, 80-sample hop) runs over a corpus of
seven random-noise utterances (0.3-0.95 s, FLAC written with soundfile, two length buckets);
the online reference is the model applied directly (normalize_waveform + Wav2Vec2ForCTC +
log_softmax), independent of the cache's own forward function.

Tolerances (float16 storage rounds to a relative error <= 2^-11 ~ 4.9e-4):
  log-probs: |cached - online| <= 1e-3 |online| + 1e-4 on valid frames (all of them, not only
    those above -10: the bound is relative);
  top-k entries after densify: the same plus 2e-3 absolute for the renormalization shift;
  hidden states: |cached - online| <= 1e-3 |online| + 1e-3.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from distill_jax import text
from distill_jax.data import manifest as manifest_lib
from distill_jax.data import pipeline
from distill_jax.data import teacher_cache as tc
from distill_jax.models import teacher as teacher_lib
from distill_jax.models import wav2vec2 as w2v
from distill_jax.models.wav2vec2_teacher import Wav2Vec2Teacher
from distill_jax.train import teacher_cache as writer

SR = 16000
DURATIONS = (0.3, 0.45, 0.5, 0.62, 0.8, 0.95, 0.4)  # seconds
BUCKETS = pipeline.BucketSpec(boundaries=(0.5, 1.0), batch_seconds=2.0)  # batches of 4 and 2
LAYERS = (0, 2)
TOP_K = 4


def _config(family: str = "layer") -> w2v.Wav2Vec2Config:
  fam = (dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)
         if family == "layer" else
         dict(feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False))
  return w2v.Wav2Vec2Config(
      vocab_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
      intermediate_size=64, conv_dim=(16, 16, 16), conv_stride=(5, 4, 4), conv_kernel=(10, 4, 4),
      num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, **fam)


CONFIG = _config()


def _write_corpus(folder, seed=0, durations=DURATIONS):
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(seed)
  utts = []
  for i, secs in enumerate(durations):
    path = os.path.join(folder, f"u{i}.flac")
    sf.write(path, (0.2 * rng.standard_normal(int(secs * SR))).clip(-1, 1), SR)
    utts.append(manifest_lib.Utterance(f"utt{i}", path, "HELLO WORLD", duration=secs))
  manifest = os.path.join(folder, "train.jsonl")
  manifest_lib.write_manifest(manifest, utts)
  return manifest


def _dataset(manifest, buckets=BUCKETS):
  ds, _ = pipeline.prepare_dataset(manifest_lib.read_manifest(manifest), text.CharTokenizer(),
                                   buckets, progress=False, num_threads=1)
  return ds


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  manifest = _write_corpus(str(tmp_path_factory.mktemp("corpus")))
  return manifest, _dataset(manifest)


@pytest.fixture(scope="module")
def params():
  return w2v.init_params(CONFIG, seed=0)


def _build(params, ds, out, manifest=None, **kw):
  kw.setdefault("shard_size", 3)
  return writer.build_cache(_teacher(CONFIG, params), ds, str(out),
                            tokenizer=text.CharTokenizer(), teacher_path="tiny-teacher",
                            manifest_path=manifest, progress=False, **kw)


def _teacher(config, params, **kw):
  return Wav2Vec2Teacher(config, params, text.CharTokenizer().vocab, **kw)


def _open(path, fingerprint, config=None, **kw):
  """data.teacher_cache.open_cache with the teacher's frame count; `config` also checks that
  the cache describes that teacher."""
  teacher = _teacher(config or CONFIG, None)
  if config is not None:
    kw["description"] = teacher.describe()
  return tc.open_cache(path, fingerprint, num_frames=teacher.num_frames, **kw)


@pytest.fixture(scope="module")
def full_cache(tmp_path_factory, corpus, params):
  manifest, ds = corpus
  out = tmp_path_factory.mktemp("full_cache")
  report = _build(params, ds, out, manifest, layers=LAYERS)
  return str(out), report


@pytest.fixture(scope="module")
def topk_cache(tmp_path_factory, corpus, params):
  manifest, ds = corpus
  out = tmp_path_factory.mktemp("topk_cache")
  _build(params, ds, out, manifest, top_k=TOP_K)
  return str(out)


_ONLINE = {}


def _online(config, params, batch):
  """The teacher run directly: log-probs [B, Tt, V], hidden states [L+1, B, Tt, D], paddings."""
  if config not in _ONLINE:
    model = w2v.Wav2Vec2ForCTC(config)
    _ONLINE[config] = jax.jit(lambda p, x, m: model.apply(
        {"params": p}, w2v.normalize_waveform(x, m), m))
  out = _ONLINE[config](params, batch["waveform"], batch["wave_paddings"])
  return (np.asarray(jax.nn.log_softmax(out["logits"], axis=-1)),
          np.asarray(out["hidden_states"]), np.asarray(out["frame_paddings"]))


def _mtimes(folder):
  return {os.path.relpath(os.path.join(r, f), folder): os.stat(os.path.join(r, f)).st_mtime_ns
          for r, _, files in os.walk(folder) for f in files}


def test_full_cache_matches_online_teacher(corpus, params, full_cache):
  _, ds = corpus
  path, report = full_cache
  assert report["num_utterances"] == len(DURATIONS)
  assert report["num_shards"] == report["shards_written"] == 3  # 7 utterances, 3 per shard
  assert len(report["compiled_shapes"]) == 2  # one per bucket
  cache = _open(path, teacher_lib.params_fingerprint(params), top_k=0, layers=LAYERS,
                vocab=text.CharTokenizer().vocab, config=CONFIG, dataset=ds)
  assert len(cache) == len(DURATIONS)
  seen = 0
  for batch in pipeline.eval_batches(ds):
    lp, hidden, fpad = _online(CONFIG, params, batch)
    got = cache.batch(batch["ids"], batch["waveform"].shape[1])
    assert got["teacher_log_probs"].shape == lp.shape  # same static Tt as the online teacher
    assert got["teacher_log_probs"].dtype == np.float32
    assert got["teacher_hidden"].shape == (hidden.shape[1], len(LAYERS)) + hidden.shape[2:]
    for r, uid in enumerate(batch["ids"]):
      if not uid:  # filler row: all padding
        assert got["teacher_paddings"][r].min() == 1.0
        continue
      seen += 1
      np.testing.assert_array_equal(got["teacher_paddings"][r], fpad[r])
      valid = fpad[r] < 0.5
      np.testing.assert_allclose(got["teacher_log_probs"][r][valid], lp[r][valid],
                                 rtol=1e-3, atol=1e-4)
      np.testing.assert_allclose(got["teacher_log_probs"][r][~valid], -np.log(32), rtol=1e-6)
      for j, layer in enumerate(LAYERS):
        np.testing.assert_allclose(got["teacher_hidden"][r, j][valid], hidden[layer, r][valid],
                                   rtol=1e-3, atol=1e-3)
      assert not np.any(got["teacher_hidden"][r][:, ~valid])
  assert seen == len(DURATIONS)


def test_topk_densified_is_normalized_and_matches_online_on_top_entries(corpus, params,
                                                                         topk_cache):
  _, ds = corpus
  cache = _open(topk_cache, teacher_lib.params_fingerprint(params), top_k=TOP_K, layers=())
  assert sorted(os.listdir(os.path.join(topk_cache, "shards", "00000"))) == [
      "index.json", "rest_log_mass.npy", "topk_ids.npy", "topk_log_probs.npy"]
  assert np.load(os.path.join(topk_cache, "shards", "00000", "topk_ids.npy")).dtype == np.uint8
  for batch in pipeline.eval_batches(ds):
    lp, _, fpad = _online(CONFIG, params, batch)
    got = cache.batch(batch["ids"], batch["waveform"].shape[1])
    assert "teacher_hidden" not in got
    dense = got["teacher_log_probs"]
    valid = fpad < 0.5
    np.testing.assert_array_equal(got["teacher_paddings"], fpad)
    np.testing.assert_allclose(np.exp(dense).sum(-1), 1.0, atol=1e-5)
    top = np.argsort(-lp, axis=-1)[..., :TOP_K]
    ref_top = np.take_along_axis(lp, top, -1)[valid]
    got_top = np.take_along_axis(dense, top, -1)[valid]
    np.testing.assert_allclose(got_top, ref_top, rtol=1e-3, atol=2e-3)
    # The rest mass is spread uniformly: all other entries are equal and carry the online rest.
    rest = np.sort(dense, axis=-1)[..., :32 - TOP_K][valid]
    np.testing.assert_allclose(rest, np.broadcast_to(rest[:, :1], rest.shape), rtol=1e-6)
    ref_rest = np.log(np.sum(np.sort(np.exp(lp), axis=-1)[..., :32 - TOP_K], -1))[valid]
    np.testing.assert_allclose(np.log(np.exp(rest).sum(-1)), ref_rest, rtol=1e-3, atol=2e-3)


def test_second_build_writes_nothing_and_resume_completes_missing_shards(tmp_path, corpus,
                                                                          params):
  manifest, ds = corpus
  out = str(tmp_path / "cache")
  _build(params, ds, out, manifest, layers=LAYERS)
  before = _mtimes(out)
  again = _build(params, ds, out, manifest, layers=LAYERS)
  assert again["shards_written"] == 0 and again["shards_skipped"] == 3
  assert again["compiled_shapes"] == []  # nothing was run
  assert _mtimes(out) == before
  # An interrupted run: one shard never renamed into place, its temp folder left behind.
  shard1 = os.path.join(out, "shards", "00001")
  os.rename(shard1, shard1 + ".tmp-999")
  meta = json.load(open(os.path.join(out, "cache_meta.json")))
  json.dump(dict(meta, complete=False), open(os.path.join(out, "cache_meta.json"), "w"))
  with pytest.raises(ValueError, match="incomplete"):
    _open(out, None)
  resumed = _build(params, ds, out, manifest, layers=LAYERS)
  assert resumed["shards_written"] == 1 and resumed["shards_skipped"] == 2
  after = _mtimes(out)
  assert set(after) == set(before)
  changed = {f for f in after if after[f] != before[f]}
  assert changed and all(f.startswith("shards/00001/") or f == "cache_meta.json"
                         for f in changed)
  _open(out, teacher_lib.params_fingerprint(params), dataset=ds)


def test_other_teacher_or_format_is_a_named_error(corpus, params, full_cache):
  _, ds = corpus
  path, _ = full_cache
  other = jax.tree.map(np.array, params)
  other["lm_head"]["bias"][0] += 1e-3
  fp = teacher_lib.params_fingerprint(params)
  assert teacher_lib.params_fingerprint(other) != fp
  # numpy or jax leaves: the same digest
  assert teacher_lib.params_fingerprint(jax.tree.map(jnp.asarray, params)) == fp
  with pytest.raises(ValueError, match="another teacher.*fingerprint"):
    _open(path, teacher_lib.params_fingerprint(other))
  with pytest.raises(ValueError, match="top_k=0, expected top_k=4"):
    _open(path, fp, top_k=4)
  with pytest.raises(ValueError, match=r"layers=\[0, 2\], expected layers=\[1\]"):
    _open(path, fp, layers=[1])
  with pytest.raises(ValueError, match="computed in float32, expected bfloat16"):
    _open(path, fp, compute_dtype="bfloat16")
  # Building into it with another teacher or format is refused unless overwrite=True.
  with pytest.raises(ValueError, match="another teacher"):
    _build(other, ds, path, layers=LAYERS)
  with pytest.raises(ValueError, match="top_k=0 vs 4"):
    _build(params, ds, path, top_k=4, layers=LAYERS)
  with pytest.raises(ValueError, match="layer 3 does not exist"):
    _build(params, ds, path, layers=(3,))
  with pytest.raises(ValueError, match="top_k=32 >= vocab_size=32"):
    _build(params, ds, path, top_k=32)


def test_changed_audio_names_the_utterance_and_rebuild_refreshes_its_shard(tmp_path, params):
  manifest = _write_corpus(str(tmp_path / "corpus"))
  ds = _dataset(manifest)
  out = str(tmp_path / "cache")
  _build(params, ds, out, manifest)
  # Rewrite one file with other samples of the same length.
  path = manifest_lib.read_manifest(manifest)[4].path
  n = sf.info(path).frames
  sf.write(path, 0.1 * np.random.default_rng(9).standard_normal(n), SR)
  ds2 = _dataset(manifest)
  fp = teacher_lib.params_fingerprint(params)
  with pytest.raises(ValueError, match="other audio: utterance 'utt4'"):
    _open(out, fp, dataset=ds2)
  before = _mtimes(out)
  report = _build(params, ds2, out, manifest)
  assert report["shards_written"] == 1
  after = _mtimes(out)
  shard = next(s for s in sorted(os.listdir(os.path.join(out, "shards")))
               if "utt4" in json.load(open(os.path.join(out, "shards", s, "index.json")))["ids"])
  assert {f.split("/")[1] for f in after if f.startswith("shards/")
          and after[f] != before[f]} == {shard}
  cache = _open(out, fp, dataset=ds2)
  batch = next(b for b in pipeline.eval_batches(ds2) if "utt4" in b["ids"])
  lp, _, fpad = _online(CONFIG, params, batch)
  got = cache.batch(batch["ids"], batch["waveform"].shape[1])["teacher_log_probs"]
  r = list(batch["ids"]).index("utt4")
  valid = fpad[r] < 0.5
  np.testing.assert_allclose(got[r][valid], lp[r][valid], rtol=1e-3, atol=1e-4)


def test_missing_id_and_wrong_padded_length(corpus, params, full_cache):
  _, ds = corpus
  path, _ = full_cache
  cache = _open(path, teacher_lib.params_fingerprint(params))
  with pytest.raises(KeyError, match=f"'nope'.*{path}"):
    cache.batch(["utt0", "nope"], 8000)
  out = cache.batch(["", "utt0"], 16000)  # filler row; a longer padded length is fine here
  assert out["teacher_log_probs"].shape == (2, w2v.num_frames(CONFIG, 16000), 32)
  assert out["teacher_paddings"][0].min() == 1.0
  assert cache.padding_invariant
  long_id = next(ex.id for ex in ds.examples if ex.num_samples > 8000)
  with pytest.raises(ValueError, match=f"{long_id}.*more than the batch's padded length 8000"):
    cache.batch([long_id], 8000)


def test_padding_dependent_teacher_refuses_another_padded_length(tmp_path, corpus):
  manifest, _ = corpus
  ds = _dataset(manifest, pipeline.BucketSpec(boundaries=(1.0,), batch_seconds=4.0))
  cfg = _config("group")
  p = w2v.init_params(cfg, seed=1)
  out = str(tmp_path / "cache")
  writer.build_cache(_teacher(cfg, p), ds, out, shard_size=4, progress=False)
  cache = _open(out, teacher_lib.params_fingerprint(p), config=cfg)
  assert not cache.padding_invariant
  cache.batch(["utt0"], 16000)
  with pytest.raises(ValueError, match="'utt0' was cached at padded length 16000.*20000"):
    cache.batch(["utt0"], 20000)
  with pytest.raises(
      ValueError, match="teacher config differs in .*config.feat_extract_norm='group' vs 'layer'"):
    _open(out, None, config=CONFIG)


def test_stats_report_bytes_per_hour(full_cache):
  path, _ = full_cache
  stats = tc.cache_stats(path)
  disk = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)
  assert stats["disk_bytes"] == disk == sum(stats["bytes_by_field"].values())
  assert stats["audio_hours"] == pytest.approx(
      sum(int(d * SR) for d in DURATIONS) / SR / 3600)
  assert stats["bytes_per_audio_hour"] == pytest.approx(disk / stats["audio_hours"])
  frames = sum(w2v.num_frames(CONFIG, int(d * SR)) for d in DURATIONS)
  assert stats["num_frames"] == frames
  assert stats["bytes_by_field"]["log_probs"] == frames * 32 * 2 + 3 * 128  # + .npy headers
  assert stats["bytes_by_field"]["hidden"] == frames * len(LAYERS) * 32 * 2 + 3 * 128
