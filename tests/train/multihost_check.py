"""One process of a two-process (multi-host) data-parallel run on CPU; prints one JSON line.

  python -m tests.train.multihost_check PROCESS_ID PORT MODE
  python -m tests.train.multihost_check PROCESS_ID PORT loop CORPUS_DIR WORKDIR

Run twice at once by tests/train/test_multihost.py: `parallel.initialize_distributed` joins the
two processes over gloo (one CPU device each, so the mesh spans both "hosts"), each feeds only
its own two rows of `parallel_check.synthetic_batch`, and the step runs NUM_STEPS times. Process
0 prints the losses and final parameters, to be compared with a one-process, one-device run on
the whole batch. `loop` runs `loop.train_and_evaluate` on the tiny corpus instead.
"""

import json
import sys

import jax
import ml_collections
import numpy as np

from distill_jax import text as text_lib
from distill_jax.models import build
from distill_jax.train import parallel, state as state_lib, steps
from tests.train import parallel_check


def main(process_id: int, port: int, mode: str) -> None:
  parallel.initialize_distributed(ml_collections.ConfigDict(dict(
      enabled=True, coordinator=f"localhost:{port}", num_processes=2, process_id=process_id,
      cpu_collectives="gloo")))
  assert jax.process_count() == 2 and jax.device_count() == 2 and jax.local_device_count() == 1
  config = parallel_check.tiny_config()
  tok = text_lib.CharTokenizer()
  model = build.build_student(config.model, tok.vocab_size)
  batch = parallel_check.synthetic_batch(tok.vocab_size)
  params = model.init({"params": jax.random.key(0)}, batch["waveform"][:1],
                      batch["wave_paddings"][:1], train=False)["params"]
  tx = state_lib.make_optimizer(config.train)
  step = steps.make_train_step(model, tx, state_lib.learning_rate_schedule(config.train),
                                   tok.blank_id)
  par = parallel.parallelize(step, parallel.make_mesh(), mode=mode)
  rows = parallel_check.BATCH // 2
  mine = {k: v[process_id * rows:(process_id + 1) * rows] for k, v in batch.items()}
  state = par.put_state(state_lib.create_state(params, tx, 0))
  losses = []
  for _ in range(parallel_check.NUM_STEPS):
    state, metrics = par.step(state, par.put_batch(mine))
    losses.append(float(par.get_metrics(metrics)["loss"]))
  final = jax.device_get(parallel.local_copy(par.get_state(state)))
  if process_id == 0:
    print(json.dumps(dict(losses=losses, params=[np.asarray(x).tolist() for x in
                                                 jax.tree_util.tree_leaves(final.params)])))
  jax.distributed.shutdown()


def loop_main(process_id: int, port: int, corpus: str, workdir: str) -> None:
  """The whole training loop (tiny config, 4 steps, a checkpoint and an eval) on two hosts."""
  from distill_jax.train import loop  # pylint: disable=import-outside-toplevel
  from tests.train import tiny_config  # pylint: disable=import-outside-toplevel
  config = tiny_config.get_config(corpus)
  config.distributed.update(dict(enabled=True, coordinator=f"localhost:{port}",
                                 num_processes=2, process_id=process_id,
                                 cpu_collectives="gloo"))
  config.train.update(dict(num_steps=4, eval_every=4, checkpoint_every=2))
  parallel.initialize_distributed(config.distributed)
  summary = loop.train_and_evaluate(config, workdir)
  if process_id == 0:
    print(json.dumps(dict(step=summary["step"], dev=summary["dev"])))
  jax.distributed.shutdown()


if __name__ == "__main__":
  if sys.argv[3] == "loop":
    loop_main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[4], sys.argv[5])
  else:
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
