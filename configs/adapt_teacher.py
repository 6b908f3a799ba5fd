"""Teacher domain adaptation on the demo: LoRA, QLoRA or full fine-tuning of the demo teacher.

Domains (the argument is MODE or MODE,DOMAIN):
- 'voice' (default): the held-out test voice flite awb, which the teacher never heard (97% test
  WER on it). Adaptation data: 317 new awb utterances (18.7 min) whose sentences are not in the
  test split; target: the test split's 67 awb utterances; original domain (forgetting): its 133
  other-voice utterances.
- 'noisy': the corpus reverberated and noised by launch/make_degraded.py's defaults (RT60
  0.3-0.9 s, DRR -3..6 dB, white/pink/brown noise at 0-15 dB SNR); original domain: the clean
  test split.

  # voice: a flite-only corpus whose 'test' split is awb, minus the demo test's sentences
  python -m launch.make_corpus --config=configs/corpus.py --out=corpora/awb \
      --config.data.corpus.engines="('flite',)" --config.data.corpus.seed=1 \
      --config.data.corpus.train_hours=0.01 --config.data.corpus.dev_utterances=1 \
      --config.data.corpus.test_utterances=320
  python -c "import json; L=lambda p: [json.loads(l) for l in open(p)]; t=L('corpora/demo/test.jsonl'); \
      s={u['text'] for u in t}; w=lambda p, us: open(p, 'w').writelines(json.dumps(u) + '\n' for u in us); \
      w('corpora/awb/adapt.jsonl', [u for u in L('corpora/awb/test.jsonl') if u['text'] not in s]); \
      w('corpora/demo/test_awb.jsonl', [u for u in t if u['speaker'] == 'flite/awb']); \
      w('corpora/demo/test_other.jsonl', [u for u in t if u['speaker'] != 'flite/awb'])"
  # noisy:
  python -m launch.make_degraded --manifest=corpora/demo/train.jsonl \
      --manifest=corpora/demo/test.jsonl --out=corpora/demo_noisy

  python -m launch.adapt --config=configs/adapt_teacher.py:lora --workdir=runs/adapt_lora
  python -m launch.adapt --config=configs/adapt_teacher.py:qlora --workdir=runs/adapt_qlora
  python -m launch.adapt --config=configs/adapt_teacher.py:full --workdir=runs/adapt_full
  python -m launch.adapt --config=configs/adapt_teacher.py:lora,noisy --workdir=runs/adapt_lora_noisy

Distill from the adapted teacher with --config.distill.teacher_adapter=runs/adapt_lora/adapters.
"""

from configs import demo

LR = {"lora": 2e-3, "qlora": 2e-3, "full": 2e-4}  # full fine-tuning moves every weight
DOMAINS = {
    "voice": dict(train="corpora/awb/adapt.jsonl", num_steps=200, warmup_steps=20,
                  eval=dict(awb_test="corpora/demo/test_awb.jsonl",
                            other_voices_test="corpora/demo/test_other.jsonl")),
    "noisy": dict(train="corpora/demo_noisy/train.jsonl", num_steps=150, warmup_steps=15,
                  eval=dict(noisy_test="corpora/demo_noisy/test.jsonl",
                            clean_test="corpora/demo/test.jsonl")),
}


def get_config(arg=None):
  mode, _, domain = (arg or "lora").partition(",")
  domain = domain or "voice"
  if mode not in LR or domain not in DOMAINS:
    raise ValueError(f"configs/adapt_teacher.py:{arg}: MODE[,DOMAIN] with MODE in {sorted(LR)} "
                     f"and DOMAIN in {sorted(DOMAINS)}")
  c = demo.get_config()
  c.name = f"adapt_teacher_{mode}_{domain}"
  c.distill.teacher = c.demo.teacher_hf
  d = DOMAINS[domain]
  # Rank 4 on every attention and feed-forward kernel and the feature projection: 196,096
  # adapter params, 1.46% of the teacher's 13.4M (at most 2%: tests/test_adapt.py checks it).
  c.adapt.update(dict(target="teacher", mode=mode, train=d["train"], num_steps=d["num_steps"],
                      warmup_steps=d["warmup_steps"], lr=LR[mode], rank=4, alpha=8.0,
                      targets=tuple(c.adapt.targets)
                      + (r".*feature_projection/projection/kernel",)))
  c.adapt.eval = d["eval"]
  # Greedy and beam search with the demo's 3-gram LM (config.eval.lm, from the training
  # transcripts: no test sentence), as the teacher is reported in the main job.
  c.adapt.decoders = ("greedy", "beam_lm")
  return c
