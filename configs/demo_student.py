"""The long CPU run of the default student: 90 minutes on ~20 h of synthetic speech.

  python -m launch.make_corpus --config=configs/demo_student.py --out=corpora/large
  python -m launch.train --config=configs/demo_student.py --workdir=runs/demo_student
  python -m launch.eval --config=configs/demo_student.py --workdir=runs/demo_student

Target: test WER on the held-out voices at most 30% within 90 minutes of training on a 2-core
CPU. `max_wall_minutes` stops the run at 90 minutes (with a final checkpoint and evaluation);
`num_steps` sets the cosine schedule, sized from the measured step time (benchmarks/bench_step.py).
"""

from configs import demo
from configs.corpus import get_corpus_config


def get_config(arg=None):
  c = demo.get_config(arg)
  c.name = "demo_student"
  c.data.corpus_dir = "corpora/large"
  c.data.corpus = get_corpus_config("default", train_hours=20.0)
  c.data.train = "corpora/large/train.jsonl"
  c.data.dev = "corpora/large/dev.jsonl"
  c.data.test = "corpora/large/test.jsonl"
  c.data.dev_max_utterances = 0
  c.data.buckets = (2.5, 4.0, 6.0, 8.0, 11.0, 15.5)
  c.data.batch_seconds = 96.0
  # At this compute budget the student underfits: SpecAugment + dropout 0.1 reached dev CER 71%
  # after 7 minutes, none reached 36% (runs/exp_* in the issue notes), so both are off.
  c.model.specaug_enabled = False
  c.model.conformer.dropout_rate = 0.0
  # What fails to carry over is the voice (54-minute run: dev 30% WER on training voices, test
  # 48%, the held-out flite voice 73%), so the run warps each utterance's spectrum (VTLP) to
  # make new voices instead.
  c.model.vtlp_enabled = True
  # 4,700 steps of ~1.07 s (benchmarks.bench_step on this machine, 2026-12-01) plus six evaluations
  # took 86.6 minutes.
  c.train.num_steps = 4700
  c.train.max_wall_minutes = 90.0
  c.train.warmup_steps = 400
  c.train.lr = 2e-3
  c.train.eval_every = 800
  c.train.checkpoint_every = 400
  c.train.keep_every = 0  # (configs/demo.py keeps snapshots for the latent page)
  c.train.report_splits = ("test",)
  c.eval.lm = "corpora/large/lm3.arpa"
  # launch.tune_lm on dev (runs/student90, 2026-12-01): alpha 0.5, beta 1.0 gave dev WER 16.8%.
  c.eval.lm_alpha = 0.5
  c.eval.lm_beta = 1.0
  return c
