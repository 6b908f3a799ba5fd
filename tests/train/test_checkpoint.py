"""Checkpoint names: 'avg:K' averages the params of the K latest kept checkpoints."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from distill_jax.train import checkpoint as ckpt_lib, state as state_lib


def _state(value: float, step: int, tx):
  params = {"dense": {"kernel": jnp.full((3, 2), value, jnp.float32),
                      "bias": jnp.arange(2, dtype=jnp.float32) * value}}
  return state_lib.create_state(params, tx, 0).replace(step=jnp.asarray(step, jnp.int32))


@pytest.fixture(name="checkpointer")
def _checkpointer(tmp_path):
  tx = optax.adam(1e-3)
  ckpt = ckpt_lib.Checkpointer(str(tmp_path), keep_last=3)
  for step, value in ((100, 1.0), (200, 2.0), (300, 4.0)):
    ckpt.save(step, _state(value, step, tx), {"data": {"position": step}})
  yield ckpt, _state(0.0, 0, tx)
  ckpt.close()


def test_avg_is_the_mean_of_the_latest_params_with_the_latest_state(checkpointer):
  ckpt, target = checkpointer
  state, extra, step = ckpt.restore("avg:2", target)
  assert step == 300 and int(state.step) == 300 and extra["data"]["position"] == 300
  np.testing.assert_allclose(np.asarray(state.params["dense"]["kernel"]), 3.0, atol=0)
  np.testing.assert_allclose(np.asarray(state.params["dense"]["bias"]), [0.0, 3.0], atol=0)
  assert state.params["dense"]["kernel"].dtype == jnp.float32
  all3, _, _ = ckpt.restore("avg:3", target)
  np.testing.assert_allclose(np.asarray(all3.params["dense"]["kernel"]), 7.0 / 3.0, rtol=1e-7)
  one, _, _ = ckpt.restore("avg:1", target)
  latest, _, _ = ckpt.restore("latest", target)
  np.testing.assert_array_equal(np.asarray(one.params["dense"]["kernel"]),
                                np.asarray(latest.params["dense"]["kernel"]))
  assert ckpt.resolve("avg:2") == 300


def test_avg_errors_name_the_count_and_the_kept_steps(checkpointer):
  ckpt, target = checkpointer
  with pytest.raises(FileNotFoundError, match=r"only 3 checkpoints.*\[100, 200, 300\]"):
    ckpt.restore("avg:4", target)
  for bad in ("avg:", "avg:0", "avg:two"):
    with pytest.raises(ValueError, match="needs a count K >= 1"):
      ckpt.resolve(bad)
  with pytest.raises(ValueError, match="'avg:K'"):
    ckpt.resolve("mean")


def test_tag_names_averaged_checkpoints_apart():
  assert ckpt_lib.tag("latest", 300) == "step300"
  assert ckpt_lib.tag(300, 300) == "step300"
  assert ckpt_lib.tag("avg:5", 300) == "step300_avg5"
