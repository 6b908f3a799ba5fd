"""RNN-Transducer student for the three-family comparison.

  python -m launch.train --config=configs/demo_transducer.py --workdir=runs/demo_transducer
  python -m launch.distill --config=configs/demo_transducer.py \
      --workdir=runs/demo_transducer_kd --config.distill.teacher=teachers/demo

The Conformer encoder of configs/demo_ctc.py with one layer fewer, an LSTM prediction network
(d=192) and a joint network of width 144; an auxiliary CTC head (weight 0.1) steadies early
training and carries the frame-level KL of distillation. The joint logits are [B, T, U+1, V]
per batch, so the batch is smaller than the CTC demo's (48 s of audio). Evaluation: greedy with
at most 3 symbols per frame, or --config.eval.decoder=beam (modified beam search, beam 4).
"""

from configs import demo


def get_config(arg=None):
  c = demo.get_config(arg)
  c.name = "demo_transducer"
  c.model.head = "transducer"
  c.model.conformer.num_layers = 5
  c.model.aux_ctc = True
  c.model.ctc_weight = 0.1
  c.model.transducer.update(dict(predictor="lstm", pred_dim=192, pred_layers=1, joint_dim=144,
                                 dropout_rate=0.0))
  c.data.batch_seconds = 48.0
  c.eval.lm = ""
  c.eval.beam_size = 4
  c.eval.max_symbols_per_frame = 3
  return c
