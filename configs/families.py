"""The three-family comparison on the embedded default: CTC, attention and transducer students of
about 3M parameters, each trained with and without distillation from the demo teacher.

  python -m launch.compare_families --config=configs/families.py --workdir=runs/families

Each family is its own full config (configs/demo_{ctc,attention,transducer}.py), overridable
as --config.families.attention.train.lr=1e-3. The main job (configs/demo.py) stops its students
at a wall cap; here every student trains the same number of steps on the same batches, so that
the families see the same data whatever their step time (and whatever else the machine runs).
KD: CTC on the transcripts + T^2 KL (T=2) on CTC posteriors (the attention and transducer
students' auxiliary CTC head) + the L1/cosine hidden term from the encoder's last layer.
"""

import ml_collections

from configs import demo_attention, demo_ctc, demo_transducer

STEPS = 550  # about the main job's KD student at its 6.5-minute cap (551 steps of 48 s)


def _family(config):
  config.train.update(dict(num_steps=STEPS, max_wall_minutes=0.0, eval_every=STEPS,
                           checkpoint_every=100, keep_every=0))
  return config


def get_config(arg=None):
  if arg:
    raise ValueError(f"configs/families.py:{arg}: takes no argument")
  c = ml_collections.ConfigDict()
  c.name = "families"
  c.order = ("ctc", "attention", "transducer")  # the families run, in table order
  c.families = ml_collections.ConfigDict(dict(
      ctc=_family(demo_ctc.get_config()),
      attention=_family(demo_attention.get_config()),
      transducer=_family(demo_transducer.get_config())))
  return c
