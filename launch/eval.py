"""Evaluate a checkpoint:

  python -m launch.eval --config=configs/demo.py --workdir=runs/demo --checkpoint=best \
      [--split=test | --manifest=path.jsonl --name=real_english]

Writes workdir/eval/<name>_<step>/{hypotheses.tsv,summary.json} and prints the summary.
"""

import json

from absl import app, flags

from distill_jax import evaluate
from launch import common

_CONFIG = common.define_config_flag()
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder.", required=True)
_CHECKPOINT = common.define_checkpoint_flag()
_SPLIT = flags.DEFINE_multi_string("split", None, "config.data entries to evaluate "
                                   "(default: config.eval.splits).")
_MANIFEST = flags.DEFINE_string("manifest", None, "A JSONL manifest to evaluate instead.")
_NAME = flags.DEFINE_string("name", None, "Name for --manifest results.")


def main(argv):
  del argv
  common.setup_logging()
  results = evaluate.evaluate_checkpoint(
      _CONFIG.value, _WORKDIR.value, _CHECKPOINT.value,
      splits=_SPLIT.value, manifest=_MANIFEST.value, name=_NAME.value)
  print(json.dumps(results, indent=2))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
