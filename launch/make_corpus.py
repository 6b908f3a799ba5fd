r"""Builds the synthetic TTS corpus described by `config.data.corpus` into --out.

    python -m launch.make_corpus --config=configs/corpus.py --out=corpora/default \
        --config.data.corpus.train_hours=0.5 --config.data.corpus.num_workers=2

Any experiment config with a `data.corpus` entry works as --config (its keys:
`distill_jax.data.corpus_spec`). Re-running with the same config reuses (or finishes) the
corpus; a different config into the same --out is an error.
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from distill_jax.data import corpus_spec
from distill_jax.data import synthetic

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file whose `data.corpus` is the corpus spec.", lock_config=True)
_OUT = flags.DEFINE_string("out", None, "Corpus folder to create or complete.")
_RETRY_FAILED = flags.DEFINE_bool(
    "retry_failed", False, "Synthesize again utterances that failed in an earlier run.")
flags.mark_flags_as_required(["config", "out"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  corpus = config.get("data", {}).get("corpus") if hasattr(config, "get") else None
  if corpus is None:
    raise app.UsageError(f"--config={flags.FLAGS['config'].config_filename} has no data.corpus")
  try:
    synthetic.build_corpus(corpus, _OUT.value, retry_failed=_RETRY_FAILED.value)
  except corpus_spec.CorpusConfigError as e:
    sys.exit(f"make_corpus: {e}")


if __name__ == "__main__":
  app.run(main)
