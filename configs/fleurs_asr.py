"""FLEURS, one language: train -> validation for model selection, test for the report.

  python -m launch.make_manifest --config=configs/fleurs_asr.py:de_de   # + vocab.json
  python -m launch.train --config=configs/fleurs_asr.py:de_de --workdir=runs/fleurs_de_de
  python -m launch.eval --config=configs/fleurs_asr.py:de_de --workdir=runs/fleurs_de_de

The argument is the FLEURS language config (en_us, de_de, es_419, fr_fr, pt_br, hi_in, ...;
default en_us). Audio comes from Hugging Face `google/fleurs` (a local copy or save_to_disk
folder: --config.data.sources.train.source=DIR, likewise dev/test), or from the published
layout extracted locally: --config=configs/fleurs_asr.py:de_de,/data/fleurs/de_de.

Text: the published `transcription` column, normalized per language (`text.normalize` with
`data.language`). English uses the wav2vec2 LibriSpeech vocabulary; other languages a character
vocabulary built from the training transcripts into `corpora/fleurs_<lang>/vocab.json`
(make_manifest writes it). Distilling from a teacher whose vocabulary cannot cover the
language is an error naming the missing characters (make_manifest checks it).
About 7-10 h of training audio per language: audio is kept in memory, a ~10M-parameter
Conformer, SpecAugment on; for a GPU/TPU machine.
"""

from configs import base
from distill_jax.data import sources


def get_config(arg=None):
  lang, _, folder = (arg or "en_us").partition(",")
  c = base.get_config()
  c.name = f"fleurs_{lang}"
  root = f"corpora/fleurs_{lang}"
  c.data.corpus_dir = root
  c.data.language = lang
  splits = dict(train="train", dev="validation", test="test")
  if folder:
    c.data.sources = {k: sources.source("fleurs_dir", paths=(folder,), splits=(v,))
                      for k, v in splits.items()}
  else:
    c.data.sources = {k: sources.source("hf_fleurs", source="google/fleurs", config=lang,
                                        splits=(v,)) for k, v in splits.items()}
  c.data.train = f"{root}/train.jsonl"
  c.data.dev = f"{root}/dev.jsonl"
  c.data.test = f"{root}/test.jsonl"
  c.tokenizer.vocab = "" if lang.startswith("en") else f"{root}/vocab.json"
  # FLEURS utterances run up to ~30 s.
  c.data.buckets = (4.0, 6.0, 8.0, 10.0, 12.5, 15.0, 20.0, 30.0)
  c.data.batch_seconds = 960.0
  c.eval.splits = ("test",)
  c.model.conformer.update(dict(model_dim=144, num_layers=12, num_heads=4, conv_kernel=31,
                                subsampling_channels=144, dropout_rate=0.1, scan_layers=True))
  c.model.specaug_enabled = True
  c.train.num_steps = 30_000
  c.train.warmup_steps = 3_000
  c.train.lr = 2e-3
  c.train.eval_every = 2_000
  c.train.checkpoint_every = 1_000
  return c
