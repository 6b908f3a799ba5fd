import numpy as np
import pytest
import soundfile as sf

from distill_jax import text
from distill_jax.data import pipeline
from distill_jax.data.manifest import Utterance

SR = 16000


def _wav(path, seconds, freq=220.0):
  t = np.arange(int(seconds * SR)) / SR
  sf.write(str(path), 0.3 * np.sin(2 * np.pi * freq * t), SR)
  return str(path)


@pytest.fixture
def utterances(tmp_path):
  rng = np.random.default_rng(0)
  words = ["HELLO", "WORLD", "SPEECH", "MODEL", "DATA"]
  utts = []
  for i in range(30):
    secs = float(rng.uniform(0.5, 3.8))
    txt = " ".join(rng.choice(words, size=2))
    utts.append(Utterance(f"u{i:02d}", _wav(tmp_path / f"u{i}.wav", secs, 100 + 10 * i), txt))
  return utts


BUCKETS = pipeline.BucketSpec(boundaries=(1.0, 2.0, 4.0), batch_seconds=8.0)


def test_bad_inputs_are_counted_skips_with_reasons(tmp_path, utterances):
  corrupt = tmp_path / "corrupt.wav"
  corrupt.write_bytes(np.random.default_rng(0).bytes(2000))
  empty = tmp_path / "empty.wav"
  sf.write(str(empty), np.zeros(0), SR)
  bad = [
      Utterance("missing", str(tmp_path / "nope.wav"), "HELLO"),
      Utterance("corrupt", str(corrupt), "HELLO"),
      Utterance("zero", str(empty), "HELLO"),
      Utterance("blank", _wav(tmp_path / "b.wav", 1.0), " ,.!"),
      Utterance("cyrillic", _wav(tmp_path / "c.wav", 1.0), "ДА"),
      Utterance("long", _wav(tmp_path / "l.wav", 5.0), "TOO LONG"),
      Utterance("fast", _wav(tmp_path / "f.wav", 0.5), "A" * 40),
  ]
  ds, report = pipeline.prepare_dataset(
      utterances + bad, text.CharTokenizer(), BUCKETS, progress=False,
      min_output_frames=lambda n: n // 640)
  reasons = {s["id"]: s["reason"] for s in report.skipped}
  assert reasons == {"missing": "missing_audio", "corrupt": "corrupt_audio",
                     "zero": "corrupt_audio", "blank": "empty_transcript",
                     "cyrillic": "oov", "long": "too_long", "fast": "labels_exceed_frames"}
  assert all(str(tmp_path) in s["path"] for s in report.skipped)
  assert report.kept == len(ds) == len(utterances)


def test_nothing_usable_is_an_error(tmp_path):
  with pytest.raises(ValueError, match="no usable utterances.*missing_audio"):
    pipeline.prepare_dataset([Utterance("m", str(tmp_path / "x.wav"), "A")],
                             text.CharTokenizer(), BUCKETS, progress=False)


def test_batches_have_static_bucket_shapes_and_paddings(utterances):
  ds, _ = pipeline.prepare_dataset(utterances, text.CharTokenizer(), BUCKETS, progress=False)
  shapes = set(ds.batch_shapes())
  with pipeline.BatchIterator(ds, seed=1) as it:
    for _ in range(10):
      b = next(it)
      B, S = b["waveform"].shape
      assert (B, S, b["labels"].shape[1]) in shapes
      assert B * S / SR <= BUCKETS.batch_seconds + 1e-6
      lengths = (1 - b["wave_paddings"]).sum(1)
      for r, uid in enumerate(b["ids"]):
        ex = next(e for e in ds.examples if e.id == uid)
        assert lengths[r] == ex.num_samples
        assert np.all(b["waveform"][r, ex.num_samples:] == 0)
        np.testing.assert_array_equal(b["labels"][r, :len(ex.labels)], ex.labels)
        assert b["label_paddings"][r, len(ex.labels):].min() == 1.0


def test_resumed_iterator_yields_the_same_batches(utterances):
  ds, _ = pipeline.prepare_dataset(utterances, text.CharTokenizer(), BUCKETS, progress=False)
  with pipeline.BatchIterator(ds, seed=3) as it:
    ref = [next(it)["ids"].tolist() for _ in range(25)]  # crosses epoch boundaries
  with pipeline.BatchIterator(ds, seed=3) as it:
    for _ in range(7):
      next(it)
    pos = it.position
  with pipeline.BatchIterator(ds, seed=3, position=pos) as it:
    resumed = [next(it)["ids"].tolist() for _ in range(18)]
  assert resumed == ref[7:]
  with pipeline.BatchIterator(ds, seed=4) as it:
    assert [next(it)["ids"].tolist() for _ in range(5)] != ref[:5]


def test_eval_batches_cover_every_example_once_with_filler_weights(utterances):
  ds, _ = pipeline.prepare_dataset(utterances, text.CharTokenizer(), BUCKETS, progress=False)
  seen = []
  for b in pipeline.eval_batches(ds):
    real = b["ids"] != ""
    np.testing.assert_array_equal(b["weights"], real.astype(np.float32))
    assert np.all(b["wave_paddings"][~real] == 1.0)
    seen += b["ids"][real].tolist()
  assert sorted(seen) == sorted(u.id for u in utterances)


def test_per_host_slices_partition_the_global_batch(utterances):
  ds, _ = pipeline.prepare_dataset(utterances, text.CharTokenizer(),
                                   pipeline.BucketSpec((1.0, 2.0, 4.0), 8.0, shards=2),
                                   progress=False)
  k, idx = ds.epoch_plan(0, 0, shuffle=True, drop_remainder=True)[0]
  full = ds.assemble(k, idx)
  parts = [ds.assemble(k, idx, process_index=i, process_count=2) for i in range(2)]
  np.testing.assert_array_equal(np.concatenate([p["waveform"] for p in parts]),
                                full["waveform"])


def _all_batches(it, n):
  return [{k: v.copy() for k, v in next(it).items()} for _ in range(n)]


def _assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_decoded_per_batch_equals_in_memory_and_resumes_exactly(utterances):
  mem, _ = pipeline.prepare_dataset(utterances, text.CharTokenizer(), BUCKETS, progress=False)
  lazy, rep = pipeline.prepare_dataset(utterances, text.CharTokenizer(), BUCKETS,
                                       progress=False, audio_in_memory=False, num_threads=3)
  assert lazy.lazy and not mem.lazy and rep.kept == len(utterances)
  assert [e.num_samples for e in lazy.examples] == [e.num_samples for e in mem.examples]
  with pipeline.BatchIterator(mem, seed=5, prefetch=2) as it:
    ref = _all_batches(it, 20)  # crosses epoch boundaries
  with pipeline.BatchIterator(lazy, seed=5, prefetch=2) as it:
    _assert_same_batches(_all_batches(it, 20), ref)
  with pipeline.BatchIterator(lazy, seed=5, prefetch=3) as it:
    _all_batches(it, 9)
    pos = it.position
  with pipeline.BatchIterator(lazy, seed=5, position=pipeline.Position.from_dict(
      pos.to_dict())) as it:
    _assert_same_batches(_all_batches(it, 11), ref[9:])


def test_auto_mode_uses_manifest_hours(utterances, monkeypatch):
  monkeypatch.setattr(pipeline, "MAX_IN_MEMORY_HOURS", 0.001)
  timed = [Utterance(u.id, u.path, u.text, duration=2.0) for u in utterances]
  ds, _ = pipeline.prepare_dataset(timed, text.CharTokenizer(), BUCKETS, progress=False,
                                   audio_in_memory=None)
  assert ds.lazy  # 60 s > 3.6 s
  assert {e.num_samples for e in ds.examples} == {2 * SR}  # the manifest's durations


def test_duration_filters_are_counted_skips(utterances):
  ds, rep = pipeline.prepare_dataset(utterances, text.CharTokenizer(), BUCKETS, progress=False,
                                     min_seconds=1.0, max_seconds=3.0)
  secs = [ex.num_samples / SR for ex in ds.examples]
  assert min(secs) >= 1.0 and max(secs) <= 3.0
  counts = rep.counts()
  assert counts["too_short"] == sum(sf.info(u.path).duration < 1.0 for u in utterances)
  assert counts["too_long"] == sum(sf.info(u.path).duration > 3.0 for u in utterances)
  assert rep.kept + counts["too_short"] + counts["too_long"] == len(utterances)


def test_audio_broken_after_preparation_becomes_a_counted_filler_row(tmp_path, utterances):
  ds, _ = pipeline.prepare_dataset(utterances, text.CharTokenizer(), BUCKETS, progress=False,
                                   audio_in_memory=False)
  victim = ds.examples[0]
  with open(victim.path, "wb") as f:
    f.write(b"\0" * 100)
  ids, weights = [], 0.0
  for b in pipeline.eval_batches(ds):
    ids += b["ids"][b["ids"] != ""].tolist()
    weights += float(b["weights"].sum())
    assert np.all(b["wave_paddings"][b["weights"] == 0] == 1.0)
  assert sorted(ids) == sorted(e.id for e in ds.examples[1:])  # the broken one is filler
  assert weights == len(ds) - 1
  assert [(s["id"], s["reason"]) for s in ds.runtime_skips] == [(victim.id, "corrupt_audio")]


def test_iterator_shards_per_host_from_jax_by_default(utterances):
  import jax
  ds, _ = pipeline.prepare_dataset(utterances, text.CharTokenizer(), BUCKETS, progress=False)
  with pipeline.BatchIterator(ds, seed=0) as it:
    assert it._process == (jax.process_index(), jax.process_count()) == (0, 1)
