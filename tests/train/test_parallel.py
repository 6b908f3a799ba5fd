"""Data parallelism on 2 host devices: shard_map and pmap give the 1-device update for the CTC
and the distillation steps, gradient accumulation gives the one-batch update, and batches that
do not split are named errors.

Everything runs in one subprocess (tests/train/parallel_check.py) started with
XLA_FLAGS=--xla_force_host_platform_device_count=2, since JAX fixes the device count at start.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOL = 1e-5


@pytest.fixture(scope="module")
def results():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, os.path.join(REPO, "tests", "train",
                                                      "parallel_check.py")],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_reference_run_trains(results):
  losses = results["ref_losses"]
  assert len(losses) == 3 and all(np.isfinite(losses)) and losses[-1] < losses[0]
  assert results["param_change"] > 100 * TOL  # the comparisons below are not vacuous


@pytest.mark.parametrize("run", ["shard_map", "pmap"])
def test_two_devices_match_one_device(results, run):
  np.testing.assert_allclose(results["losses"][run], results["ref_losses"], rtol=TOL)
  assert results["param_diff"][run] < TOL


def test_grad_accumulation_matches_one_batch(results):
  run = "shard_map_accum2"  # 2 devices x 2 micro-batches of one row each
  np.testing.assert_allclose(results["losses"][run], results["ref_losses"], rtol=TOL)
  assert results["param_diff"][run] < TOL


@pytest.mark.parametrize("mode", ["shard_map", "pmap"])
def test_batch_not_divisible_by_devices_is_named(results, mode):
  msg = results["errors"][mode]
  assert "batch size 3" in msg and "number of devices (2)" in msg


def test_micro_batches_that_do_not_split_are_named(results):
  msg = results["accum_error"]
  assert "batch of 4 rows" in msg and "grad_accum_steps=3" in msg


@pytest.mark.parametrize("run", ["shard_map", "pmap"])
def test_distillation_step_on_two_devices_matches_one_device(results, run):
  assert results["kd_param_change"] > 100 * TOL
  np.testing.assert_allclose(results["kd_losses"][run], results["kd_ref_losses"], rtol=TOL)
  assert results["kd_param_diff"][run] < TOL
