r"""Runs the frozen teacher once over a split and stores its outputs for distillation:

  python -m launch.make_teacher_cache --config=configs/demo.py \
      --config.distill.teacher=teachers/demo --out=caches/demo_train [--top_k=8]

Then distill with --config.distill.cache=caches/demo_train. Layers stored are those of the
config's hidden-state mapping (config.distill.gamma > 0). Prints disk bytes per audio hour.
"""

import json

from absl import app, flags

from distill_jax.data import teacher_cache
from distill_jax.train import splits
from distill_jax.train import teacher as teacher_lib
from distill_jax.train import teacher_cache as cache_writer
from launch import common

_CONFIG = common.define_config_flag()
_OUT = flags.DEFINE_string("out", None, "Cache folder.", required=True)
_SPLIT = flags.DEFINE_string("split", "train", "config.data entry to run the teacher on.")
_TOP_K = flags.DEFINE_integer("top_k", 0, "Store the top k log-probs per frame (0 = all).")


def main(argv):
  del argv
  common.setup_logging()
  config = _CONFIG.value
  tokenizer = splits.load_tokenizer(config)
  with config.distill.unlocked():
    config.distill.cache = ""  # load the teacher itself
  teacher = teacher_lib.load_teacher(config, tokenizer)
  dataset, _ = splits.load_split(config, config.data[_SPLIT.value], _SPLIT.value, tokenizer)
  cache_writer.build_cache(teacher.teacher, dataset, _OUT.value, top_k=_TOP_K.value,
                           layers=teacher.layers, tokenizer=tokenizer, teacher_path=teacher.path,
                           manifest_path=config.data[_SPLIT.value])
  print(json.dumps(teacher_cache.cache_stats(_OUT.value), indent=2))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
