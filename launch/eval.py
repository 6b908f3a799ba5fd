r"""Evaluate a training run folder or a teacher folder on its splits or on a manifest:

  python -m launch.eval --workdir=runs/demo/kd [--checkpoint=best] [--split=test]
  python -m launch.eval --workdir=runs/demo/kd --manifest=my_clips.jsonl
  python -m launch.eval --teacher=teachers/demo_hf --manifest=my_clips.jsonl

A run folder describes itself: its saved config gives the model, data and decoding; --config
(with --config.eval.decoder=beam_lm, ...) overrides the data entries and decoding only. A
teacher folder (converted or Hugging Face) uses --config's data and decoding (default
configs/base.py). Writes <folder>/eval/<name>_<tag>/{hypotheses.tsv,summary.json} and prints
the summaries. No utterance is dropped for its length; any other skip is listed by id.
"""

import json

from absl import app, flags

from distill_jax.jobs import evaluate
from launch import common

_CONFIG = common.define_config_flag()
_WORKDIR = flags.DEFINE_string("workdir", None, "Training run folder.")
_TEACHER = flags.DEFINE_string("teacher", None, "Teacher folder instead of a run.")
_CHECKPOINT = common.define_checkpoint_flag()
_SPLIT = flags.DEFINE_multi_string("split", None, "config.data entries to evaluate "
                                   "(default: config.eval.splits).")
_MANIFEST = flags.DEFINE_string("manifest", None, "A JSONL manifest to evaluate instead.")
_NAME = flags.DEFINE_string("name", None, "Name for --manifest results.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if bool(_WORKDIR.value) == bool(_TEACHER.value):
    raise app.UsageError("give exactly one of --workdir (a training run) and --teacher")
  common.setup_logging()
  kw = dict(config=_CONFIG.value, splits=_SPLIT.value, manifest=_MANIFEST.value,
            name=_NAME.value)
  if _TEACHER.value:
    results = evaluate.evaluate_teacher(_TEACHER.value, **kw)
  else:
    results = evaluate.evaluate_run(_WORKDIR.value, _CHECKPOINT.value, **kw)
  print(json.dumps(results, indent=2))


if __name__ == "__main__":
  app.run(main)
