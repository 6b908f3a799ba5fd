"""data/teacher_cache.py on its own: top-k storage densified back to a distribution (the
whole cache, written and read, is tests/train/test_teacher_cache.py)."""

import numpy as np
import pytest

from distill_jax.data import teacher_cache as tc


def test_densify_spreads_rest_mass_uniformly():
  vals = np.log(np.array([[0.5, 0.3]], np.float32))
  out = tc.densify(vals, np.array([[3, 1]]), np.log(np.array([0.2], np.float32)), 6)
  np.testing.assert_allclose(np.exp(out), [[0.05, 0.3, 0.05, 0.5, 0.05, 0.05]], rtol=1e-6)
  with pytest.raises(ValueError, match="shapes disagree"):
    tc.densify(vals, np.array([[3]]), np.zeros(1), 6)
