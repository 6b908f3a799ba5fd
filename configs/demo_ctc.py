"""The CTC member of the three-family comparison: configs/demo.py's Conformer-CTC student.

  python -m launch.train --config=configs/demo_ctc.py --workdir=runs/demo_ctc
  python -m launch.distill --config=configs/demo_ctc.py --workdir=runs/demo_ctc_kd \
      --config.distill.teacher=teachers/demo

Same corpus, schedule and encoder as configs/demo_attention.py and configs/demo_transducer.py,
whose students have about the same number of parameters (printed by the training log).
"""

from configs import demo


def get_config(arg=None):
  c = demo.get_config(arg)
  c.name = "demo_ctc"
  return c
