"""Attention (sequence-to-sequence) student for the three-family comparison.

  python -m launch.train --config=configs/demo_attention.py --workdir=runs/demo_attention
  python -m launch.distill --config=configs/demo_attention.py --workdir=runs/demo_attention_kd \
      --config.distill.teacher=teachers/demo

A 5-layer Conformer encoder (one layer fewer than configs/demo_ctc.py, so the totals match)
with an LSTM decoder over additive (Bahdanau) attention, joint CTC-attention training
(lambda = 0.3, auxiliary CTC head on the encoder) and label smoothing 0.1. Distillation:
sequence-level KD with distill.hard_labels='teacher', frame-level KL through the auxiliary CTC
head (distill.beta) and hidden-state KD on the encoder (distill.gamma). Evaluation: greedy, or
--config.eval.decoder=beam (beam 8, GNMT length penalty 0.6). The n-gram LM of the CTC demo is
a CTC decoder and is not used here.
"""

from configs import demo


def get_config(arg=None):
  c = demo.get_config(arg)
  c.name = "demo_attention"
  c.model.head = "attention"
  c.model.conformer.num_layers = 5
  c.model.aux_ctc = True
  c.model.ctc_weight = 0.3
  c.model.label_smoothing = 0.1
  c.model.attention_decoder.update(dict(kind="lstm", attention="additive", dim=144,
                                        num_layers=1, num_heads=4, dropout_rate=0.0))
  c.eval.lm = ""
  c.eval.beam_size = 8
  c.eval.length_penalty = 0.6
  c.eval.max_length_ratio = 1.0
  return c
