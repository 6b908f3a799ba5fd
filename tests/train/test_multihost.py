"""Two processes (two "hosts", one CPU device each, joined by jax.distributed over gloo) train
like one process on the whole batch: the multi-host path of parallel.py (per-host rows
assembled into global arrays, metrics and state read from a local replica)."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from distill_jax.train import runs
from tests.train import parallel_check

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOL = 1e-5  # float32 sums over 2 hosts vs 1 device, 3 Adam steps


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _two_processes(*args: str) -> dict:
  port = _free_port()
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device each
  procs = [subprocess.Popen([sys.executable, "-m", "tests.train.multihost_check", str(i),
                             str(port), *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  return json.loads(outs[0][0].strip().splitlines()[-1])


@pytest.fixture(scope="module")
def reference():
  ref = parallel_check.train("shard_map", 1)
  return dict(losses=ref["losses"], params=[np.asarray(x) for x in ref["params"]],
              init=[np.asarray(x) for x in ref["init"]])


@pytest.mark.slow  # ~60 s: two processes join over gloo
@pytest.mark.parametrize("mode", ["shard_map", "pmap"])
def test_two_hosts_match_one_device(reference, mode):
  assert jax.process_count() == 1
  got = _two_processes(mode)
  np.testing.assert_allclose(got["losses"], reference["losses"], rtol=TOL)
  change = max(float(np.max(np.abs(a - b))) for a, b in zip(reference["params"],
                                                            reference["init"]))
  assert change > 100 * TOL  # the comparison is not vacuous
  diff = max(float(np.max(np.abs(np.asarray(a) - b)))
             for a, b in zip(got["params"], reference["params"]))
  assert diff < TOL


@pytest.mark.slow
def test_training_loop_on_two_hosts_matches_two_devices_in_one_process(tiny_corpus, tmp_path):
  """train_and_evaluate on 2 processes: same final params as 2 devices in one process (same
  global batches); process 0 alone writes metrics; the checkpoint restores everywhere."""
  from tests.train import tiny_config  # pylint: disable=import-outside-toplevel
  multi = str(tmp_path / "multi")
  got = _two_processes("loop", tiny_corpus, multi)
  assert got["step"] == 4 and got["dev"]["utterances"] > 0 and got["dev"]["wer"] > 0.0
  rows = [json.loads(l) for l in open(os.path.join(multi, "metrics.jsonl"))]
  assert len([r for r in rows if "dev/wer" in r]) == 1  # written once, by process 0

  single = str(tmp_path / "single")
  code = ("import sys; from tests.train import tiny_config; from distill_jax.train import loop; "
          "c = tiny_config.get_config(sys.argv[1]); "
          "c.train.update(dict(num_steps=4, eval_every=4, checkpoint_every=2)); "
          "loop.train_and_evaluate(c, sys.argv[2])")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  subprocess.run([sys.executable, "-c", code, tiny_corpus, single], cwd=REPO, env=env,
                 check=True, capture_output=True)
  leaves = lambda w: jax.tree_util.tree_leaves(runs.restore_student(w, "latest")[1])
  diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
             for a, b in zip(leaves(multi), leaves(single)))
  assert diff < TOL
