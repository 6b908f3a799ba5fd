"""A tiny distillation run that keeps student snapshots (config.train.keep_every)."""

from distill_jax.train import loop
from tests.train import tiny_config


def tiny_distill_run(corpus, teacher, workdir, gamma=0.5):
  """12 steps; every second step kept (config.train.keep_every=2): 6 checkpoints."""
  c = tiny_config.get_config(corpus)
  c.distill.update(dict(teacher=teacher, alpha=0.5, beta=1.0, gamma=gamma,
                        layer_mapping="last_k", layer_k=1))
  c.train.update(dict(num_steps=12, eval_every=12, checkpoint_every=2, keep_last=1,
                      keep_every=2, log_every=4))
  loop.train_and_evaluate(c, workdir)
  return c
