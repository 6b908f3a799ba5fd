"""The synthetic-corpus spec experiments embed as `config.data.corpus`.

    from configs.corpus import get_corpus_config
    config.data.corpus = get_corpus_config("default", train_hours=5.0)

As a config file of its own (its `.data.corpus` is the spec), for building a corpus alone:

    python -m launch.make_corpus --config=configs/corpus.py --out=corpora/default \\
        --config.data.corpus.train_hours=0.5
    python -m launch.make_corpus --config=configs/corpus.py:tiny --out=corpora/tiny

Keys and meaning: `distill_jax.data.synthetic.DEFAULT_CORPUS` and that module's docstring.
"""

from __future__ import annotations

from typing import Any, Optional

import ml_collections

from distill_jax.data import synthetic

# Named size presets (overrides of `synthetic.DEFAULT_CORPUS`).
PRESETS: dict[str, dict[str, Any]] = {
    # ~1 h of training speech, 200 dev and 200 test utterances.
    "default": {},
    # A few minutes of short sentences: smoke tests and the test suite's fixtures.
    "tiny": {"train_hours": 0.05, "max_train_utterances": 40, "dev_utterances": 8,
             "test_utterances": 8, "max_words": 8, "min_words": 3, "num_workers": 1},
}


def get_corpus_config(preset: str = "default", **overrides: Any) -> ml_collections.ConfigDict:
  """A locked ConfigDict with every corpus key (a typo in an override is an error naming it).

  Args:
    preset: a name of `PRESETS`.
    **overrides: corpus keys to change, e.g. `train_hours=5.0, engines=("flite",)`.
  """
  if preset not in PRESETS:
    raise ValueError(f"unknown corpus preset {preset!r}; known: {sorted(PRESETS)}")
  values = {**synthetic.DEFAULT_CORPUS, **PRESETS[preset]}
  unknown = sorted(set(overrides) - set(values))
  if unknown:
    raise KeyError(f"unknown corpus config key(s) {unknown}; known: {sorted(values)}")
  values.update(overrides)
  cfg = ml_collections.ConfigDict(values)
  cfg.lock()
  return cfg


def get_config(arg: Optional[str] = None) -> ml_collections.ConfigDict:
  """Config file entry point: `.data.corpus` holds preset `arg` (default "default")."""
  config = ml_collections.ConfigDict()
  config.data = ml_collections.ConfigDict()
  config.data.corpus = get_corpus_config(arg or "default")
  config.lock()
  return config
