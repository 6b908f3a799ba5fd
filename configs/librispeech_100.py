"""LibriSpeech train-clean-100 -> dev-clean, test-clean / test-other: the quick real-data run.

  python -m launch.make_manifest --config=configs/librispeech_100.py
  python -m launch.train --config=configs/librispeech_100.py --workdir=runs/ls100

Same arguments as configs/librispeech_960.py (hf | tfds | a LibriSpeech folder); a smaller
Conformer (d=144, 12 layers, ~10M parameters) and schedule. 100 h fits in memory as int16
(11.5 GB) but is decoded per batch all the same, which the input pipeline sustains
(benchmarks/bench_input.py).
"""

from configs import librispeech_960


def get_config(arg=None):
  c = librispeech_960.get_config(arg)
  c.name = "librispeech_100"
  root = c.data.corpus_dir
  c.data.sources.train.splits = {
      "hf_librispeech": ("train.clean.100",), "tfds_librispeech": ("train_clean100",),
  }.get(c.data.sources.train.kind, ())
  if c.data.sources.train.kind == "librispeech_dir":
    c.data.sources.train.paths = c.data.sources.train.paths[:1]
  c.data.train = f"{root}/train_clean_100.jsonl"
  c.data.batch_seconds = 960.0
  c.model.conformer.update(dict(model_dim=144, num_layers=12, num_heads=4, conv_kernel=31,
                                subsampling_channels=144))
  c.train.num_steps = 60_000
  c.train.warmup_steps = 5_000
  c.train.lr = 2e-3
  return c
