"""Adapt the teacher to a new domain, or personalize a student to one voice (LoRA / QLoRA / full):

  python -m launch.adapt --config=configs/adapt_teacher.py --workdir=runs/adapt_lora
  python -m launch.adapt --config=configs/adapt_teacher.py --workdir=runs/adapt_qlora \\
      --config.adapt.mode=qlora
  python -m launch.adapt --config=configs/personalize_student.py --workdir=runs/personal

Writes WORKDIR/adapters (Orbax, the adapters alone) and WORKDIR/results.{json,md} (WER before
and after on every config.adapt.eval manifest). Distill from an adapted teacher with
--config.distill.teacher_adapter=WORKDIR/adapters. See distill_jax/jobs/adapt.py.
"""

import json

from absl import app, flags

from distill_jax.jobs import adapt
from launch import common

_CONFIG = common.define_config_flag()
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder.", required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  common.setup_logging(_WORKDIR.value)
  out = adapt.run(_CONFIG.value, _WORKDIR.value)
  print(adapt.results_table([out]))
  print(json.dumps({k: out[k] for k in ("mode", "trainable_fraction", "relative_wer_change")},
                   indent=1))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
