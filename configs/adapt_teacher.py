"""Teacher domain adaptation on the demo: the demo teacher adapted to reverberant, noisy speech.

  python -m launch.make_degraded --manifest=corpora/demo/train.jsonl \
      --manifest=corpora/demo/test.jsonl --out=corpora/demo_noisy
  python -m launch.adapt --config=configs/adapt_teacher.py:lora --workdir=runs/adapt_lora
  python -m launch.adapt --config=configs/adapt_teacher.py:qlora --workdir=runs/adapt_qlora
  python -m launch.adapt --config=configs/adapt_teacher.py:full --workdir=runs/adapt_full

The new domain is the corpus copied through launch/make_degraded.py's defaults (RT60 0.3-0.9 s,
DRR -3..6 dB, white/pink/brown noise at 0-15 dB SNR); the original domain is the clean test
split (how much each mode forgets). Distill from the adapted teacher with
--config.distill.teacher_adapter=runs/adapt_lora/adapters.
"""

from configs import demo

LR = {"lora": 3e-3, "qlora": 3e-3, "full": 3e-4}  # full fine-tuning moves every weight


def get_config(arg=None):
  mode = arg or "lora"
  if mode not in LR:
    raise ValueError(f"configs/adapt_teacher.py:{mode}: choose one of {sorted(LR)}")
  c = demo.get_config()
  c.name = f"adapt_teacher_{mode}"
  c.distill.teacher = c.demo.teacher_hf
  # Rank 4 on every attention and feed-forward kernel and the feature projection: 196,096
  # adapter params, 1.46% of the teacher's 13.4M (at most 2%: tests/test_adapt.py checks it).
  c.adapt.update(dict(target="teacher", mode=mode, train="corpora/demo_noisy/train.jsonl",
                      num_steps=150, warmup_steps=15, lr=LR[mode], rank=4, alpha=8.0,
                      targets=tuple(c.adapt.targets)
                      + (r".*feature_projection/projection/kernel",)))
  c.adapt.eval = dict(noisy_test="corpora/demo_noisy/test.jsonl",
                      clean_test="corpora/demo/test.jsonl")
  return c
