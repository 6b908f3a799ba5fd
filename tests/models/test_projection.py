"""models/projection.py: layer mappings and the hidden-state projections."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.losses import hidden
from distill_jax.models import projection


def test_layer_mapping_kinds():
  assert projection.layer_mapping("last_k", 4, 12, k=2) == ((3, 11), (4, 12))
  assert projection.layer_mapping("every_k", 4, 12) == ((1, 3), (2, 6), (3, 9), (4, 12))
  assert projection.layer_mapping("every_k", 3, 12, k=2) == ((1, 2), (2, 4), (3, 6))
  assert projection.layer_mapping("explicit", 2, 12, pairs=[[0, 0], (2, 12), (2, 8)]) == (
      (0, 0), (2, 12), (2, 8))


def test_layer_mapping_errors():
  with pytest.raises(ValueError, match="last_k with k=5 needs student layer 0"):
    projection.layer_mapping("last_k", 4, 12, k=5)
  with pytest.raises(ValueError, match="student layer 4 to teacher layer 16, which does not"):
    projection.layer_mapping("every_k", 4, 12, k=4)
  with pytest.raises(ValueError, match=r"teacher layer 13 in pair \(1, 13\) does not exist"):
    projection.layer_mapping("explicit", 4, 12, pairs=[(1, 13)])
  with pytest.raises(ValueError, match=r"student layer -1 in pair \(-1, 3\) does not exist"):
    projection.layer_mapping("explicit", 4, 12, pairs=[(-1, 3)])
  with pytest.raises(ValueError, match=r"pair \(1, 3\) appears more than once"):
    projection.layer_mapping("explicit", 4, 12, pairs=[(1, 3), (1, 3)])
  with pytest.raises(ValueError, match="unknown layer mapping 'first_k'"):
    projection.layer_mapping("first_k", 4, 12, k=1)
  with pytest.raises(ValueError, match="'last_k' needs k"):
    projection.layer_mapping("last_k", 4, 12)
  with pytest.raises(ValueError, match="takes k, not pairs"):
    projection.layer_mapping("every_k", 4, 12, pairs=[(1, 1)])
  with pytest.raises(ValueError, match="layer 5 does not exist: hidden_states has 5 entries"):
    hidden.select_layers(jnp.zeros((5, 1, 2, 3)), [4, 5])




def test_hidden_projections():
  pairs = projection.layer_mapping("last_k", 3, 6, k=2)
  states = jnp.asarray(np.random.default_rng(30).normal(size=(4, 2, 5, 8)), jnp.float32)
  proj = projection.HiddenProjections(pairs, teacher_dim=12)
  params = proj.init(jax.random.PRNGKey(0), states)["params"]
  assert sorted(params) == ["proj_2_5", "proj_3_6"]
  out = proj.apply({"params": params}, states)
  assert len(out) == 2 and all(o.shape == (2, 5, 12) for o in out)
  k, bias = params["proj_3_6"]["kernel"], params["proj_3_6"]["bias"]
  np.testing.assert_allclose(out[1], states[3] @ k + bias, atol=1e-5)
  with pytest.raises(ValueError, match=r"student layer 4 in pair \(4, 6\) does not exist"):
    projection.HiddenProjections(((4, 6),), 12).init(jax.random.PRNGKey(0), states)


# ----------------------------------------------------------------------------- vocab, total

