"""numpy features of the runtime == the student's JAX front end (log-mel + utterance CMVN)."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.audio import features as jax_feats
from distill_jax.export import folder
from distill_jax.ondevice.features import FeatureExtractor, mel_filterbank

TOL = 1e-5  # normalized features, max absolute difference


def _jax(wav, config):
  w = jnp.asarray(wav)[None]
  x, pad = jax_feats.log_mel(w, jnp.zeros_like(w), config)
  return np.asarray(jax_feats.normalize_features(x, pad))[0]


@pytest.mark.parametrize("fields", [
    {},                                                   # the students' default front end
    dict(preemphasis=0.97, num_mels=40, htk=True, mel_norm=None, fmin=20.0, fmax=7600.0),
])
def test_features_equal_the_students(fields):
  config = jax_feats.LogMelConfig(**fields)
  ours = FeatureExtractor(dataclasses.asdict(config))
  for seconds in (0.5, 3.0):
    wav = folder.test_signal(seconds, seed=int(seconds * 10))
    want = _jax(wav, config)
    got = ours(wav)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


def test_filterbank_is_bit_identical():
  for args in [(80, 512, 16000, 0.0, None, False, "slaney"),
               (40, 400, 8000, 20.0, 3800.0, True, None)]:
    np.testing.assert_array_equal(mel_filterbank(*args), jax_feats.mel_filterbank(*args))


def test_short_audio_and_bad_config_errors():
  ours = FeatureExtractor({})
  with pytest.raises(ValueError, match="shorter than one feature frame"):
    ours(np.zeros(399, np.float32))
  assert ours(np.zeros(400, np.float32)).shape == (1, 80)
  with pytest.raises(ValueError, match="unknown field"):
    FeatureExtractor({"num_mel": 80})
