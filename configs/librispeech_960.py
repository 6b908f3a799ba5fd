"""LibriSpeech 960 h (train.clean.100 + train.clean.360 + train.other.500) -> dev-clean for
model selection, test-clean / test-other for the report; for a GPU/TPU machine.

  python -m launch.make_manifest --config=configs/librispeech_960.py          # once (~65 GB)
  python -m launch.train --config=configs/librispeech_960.py --workdir=runs/ls960
  python -m launch.eval --config=configs/librispeech_960.py --workdir=runs/ls960 \
      --split=test_clean --split=test_other

The argument picks the source of the audio:
  (none) or 'hf'  Hugging Face `openslr/librispeech_asr` (config 'all'); point it at a local
                  copy with --config.data.sources.train.source=DIR (and dev/test_*), or stream
                  with --config.data.sources.train.streaming=True.
  'tfds'          TFDS `librispeech` prepared in ~/tensorflow_datasets (or data_dir).
  a folder        the OpenSLR release extracted: DIR/train-clean-100, ..., DIR/test-other.

Model: a Conformer of ~30M parameters (d=256, 16 layers) with SpecAugment, 32 minutes of padded
audio per global batch, nn.scan over layers (fast compiles on accelerators). Audio is decoded
per batch (`data.audio_in_memory='no'`): 960 h would need 110 GB of RAM as int16.
"""

import os

from configs import base
from distill_jax.data import sources


def _sources(arg):
  splits = dict(train=("train.clean.100", "train.clean.360", "train.other.500"),
                dev=("validation.clean",), test_clean=("test.clean",),
                test_other=("test.other",))
  if arg in (None, "", "hf"):
    return {k: sources.source("hf_librispeech", source="openslr/librispeech_asr",
                              config="all", splits=v, num_proc=8) for k, v in splits.items()}
  if arg == "tfds":
    tf_splits = dict(train=("train_clean100", "train_clean360", "train_other500"),
                     dev=("dev_clean",), test_clean=("test_clean",), test_other=("test_other",))
    return {k: sources.source("tfds_librispeech", splits=v) for k, v in tf_splits.items()}
  dirs = dict(train=("train-clean-100", "train-clean-360", "train-other-500"),
              dev=("dev-clean",), test_clean=("test-clean",), test_other=("test-other",))
  return {k: sources.source("librispeech_dir", paths=tuple(os.path.join(arg, d) for d in v))
          for k, v in dirs.items()}


def get_config(arg=None):
  c = base.get_config(arg)
  c.name = "librispeech_960"
  root = "corpora/librispeech"
  c.data.corpus_dir = root
  c.data.sources = _sources(arg)
  c.data.train = f"{root}/train_960.jsonl"
  c.data.dev = f"{root}/dev_clean.jsonl"
  c.data.test = f"{root}/test_clean.jsonl"
  c.data.test_clean = f"{root}/test_clean.jsonl"
  c.data.test_other = f"{root}/test_other.jsonl"
  c.data.buckets = (3.0, 5.0, 7.5, 10.0, 12.5, 15.0, 17.5, 20.0, 25.0, 35.0)
  c.data.batch_seconds = 1920.0
  c.data.audio_in_memory = "no"
  c.data.prefetch = 8
  c.eval.splits = ("test_clean", "test_other")

  c.model.conformer.update(dict(model_dim=256, num_layers=16, num_heads=4, conv_kernel=31,
                                subsampling_channels=256, dropout_rate=0.1, scan_layers=True))
  c.model.specaug_enabled = True
  c.train.num_steps = 150_000
  c.train.warmup_steps = 10_000
  c.train.lr = 1.5e-3
  c.train.weight_decay = 1e-3
  c.train.log_every = 100
  c.train.eval_every = 5_000
  c.train.checkpoint_every = 2_500
  c.train.keep_last = 3
  return c
