r"""Estimates a word n-gram LM (interpolated Kneser-Ney, ARPA) on a corpus's training text.

    python -m launch.make_lm --config=configs/demo_student.py --out=corpora/large/lm3.arpa

The text is the training split of the corpus's sentence pool (`config.data.corpus`), which
holds no dev, test or real-speech evaluation sentence. Prints the perplexity on the dev split's
transcripts. Use it with `--config.eval.decoder=beam_lm --config.eval.lm=PATH` in launch.eval.
"""

from __future__ import annotations

import logging

from absl import app, flags

from distill_jax.data import manifest, synthetic
from distill_jax.decode import ngram
from launch import common

_CONFIG = common.define_config_flag()
_OUT = flags.DEFINE_string("out", None, "ARPA file to write.", required=True)
_ORDER = flags.DEFINE_integer("order", 3, "n-gram order.")


def main(argv):
  del argv
  common.setup_logging()
  config = _CONFIG.value
  text = synthetic.language_model_text(config.data.corpus)
  lm = ngram.build_arpa(text, _OUT.value, order=_ORDER.value)
  dev = [u.text for u in manifest.read_manifest(config.data.dev)]
  logging.getLogger(__name__).info(
      "%d-gram LM on %d sentences (%d words in the vocabulary) -> %s; dev perplexity %.1f over "
      "%d sentences", _ORDER.value, len(text), len(lm.vocabulary), _OUT.value,
      ngram.corpus_perplexity(lm, dev), len(dev))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
