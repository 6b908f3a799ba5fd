"""A seconds-scale training config over the `tiny_corpus` fixture: --config=...:CORPUS_DIR."""

from configs import base


def get_config(corpus_dir):
  c = base.get_config()
  c.name = "tiny"
  c.progress = False
  c.data.train = f"{corpus_dir}/train.jsonl"
  c.data.dev = f"{corpus_dir}/dev.jsonl"
  c.data.test = f"{corpus_dir}/test.jsonl"
  c.data.buckets = (2.0, 3.0, 5.0)
  c.data.batch_seconds = 10.0
  c.model.conformer.update(dict(model_dim=16, num_layers=1, num_heads=2, conv_kernel=3,
                                subsampling_channels=4))
  c.train.update(dict(num_steps=40, warmup_steps=5, log_every=5, eval_every=20,
                      checkpoint_every=5, keep_last=2))
  return c
