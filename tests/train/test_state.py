"""The optimizer's frozen params (train/state.py): never updated, no state, named errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from distill_jax.train import state as state_lib


def _cfg(**kw) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(lr=0.1, warmup_steps=0, num_steps=10, final_lr_ratio=1.0,
                                        b1=0.9, b2=0.98, weight_decay=0.1, grad_clip=5.0, **kw))


def _params():
  return {"encoder": {"layers_0": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}},
          "ctc_head": {"out": {"kernel": jnp.ones((2, 4)), "bias": jnp.ones(4)}}}


def test_frozen_params_do_not_move_and_the_rest_follow_plain_adamw():
  params = _params()
  grads = jax.tree.map(lambda x: jnp.full_like(x, 3.0), params)
  tx = state_lib.make_optimizer(_cfg(frozen_params=("encoder/",)))
  updates, _ = tx.update(grads, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  for leaf_new, leaf_old in zip(jax.tree.leaves(new["encoder"]),
                                jax.tree.leaves(params["encoder"])):
    np.testing.assert_array_equal(leaf_new, leaf_old)
  # The trained part gets exactly the update of the optimizer without frozen params, applied
  # to it alone (clipping sees only its gradients).
  plain = state_lib.make_optimizer(_cfg())
  head = {"ctc_head": params["ctc_head"]}
  ref, _ = plain.update({"ctc_head": grads["ctc_head"]}, plain.init(head), head)
  np.testing.assert_allclose(updates["ctc_head"]["out"]["kernel"],
                             ref["ctc_head"]["out"]["kernel"],
                             rtol=1e-6)
  assert float(jnp.abs(updates["ctc_head"]["out"]["kernel"]).max()) > 0


def test_no_frozen_params_is_the_plain_optimizer_and_unmatched_patterns_are_named():
  assert state_lib.frozen_labels(_params(), ("ctc_head/out/b",))["ctc_head"]["out"] == {
      "kernel": "train", "bias": "frozen"}
  with pytest.raises(ValueError, match=r"\['decoder/'\] match no parameter"):
    state_lib.frozen_labels(_params(), ("encoder/", "decoder/"))
