"""enhance/losses.py and discriminators.py: SI-SDR against numpy, MR-STFT, GAN terms."""

import jax
import jax.numpy as jnp
import numpy as np

from distill_jax.enhance import discriminators as disc_lib
from distill_jax.enhance import losses
from distill_jax.enhance import metrics

# Jitted: one compilation each instead of op-by-op dispatch.
_mrstft = jax.jit(losses.multi_resolution_stft_loss, static_argnums=2)


def _np_si_sdr(est, ref):
  """Direct float64 formula: zero-mean, project, ratio of energies in dB."""
  est, ref = est - est.mean(), ref - ref.mean()
  target = np.dot(est, ref) / np.dot(ref, ref) * ref
  return 10 * np.log10(np.sum(target ** 2) / np.sum((est - target) ** 2))


def test_si_sdr_matches_numpy_and_is_scale_invariant():
  rng = np.random.default_rng(0)
  ref = rng.standard_normal((3, 1600))
  est = ref + rng.standard_normal((3, 1600)) * np.array([[0.1], [0.5], [2.0]])
  got = np.asarray(losses.si_sdr(jnp.asarray(est, jnp.float32), jnp.asarray(ref, jnp.float32)))
  want = np.array([_np_si_sdr(e, r) for e, r in zip(est, ref)])
  np.testing.assert_allclose(got, want, atol=1e-3)  # float32 sums over 1600 samples
  scaled = np.asarray(losses.si_sdr(jnp.asarray(7.0 * est, jnp.float32),
                                    jnp.asarray(ref, jnp.float32)))
  np.testing.assert_allclose(scaled, got, atol=1e-3)
  assert abs(metrics.si_sdr(ref[0], est[0]) - want[0]) < 1e-6  # host metric (eps 1e-8)
  loss = losses.si_sdr_loss(jnp.asarray(est, jnp.float32), jnp.asarray(ref, jnp.float32))
  assert abs(float(loss) + np.mean(got)) < 1e-4


def test_multi_resolution_stft_loss():
  rng = np.random.default_rng(1)
  ref = jnp.asarray(rng.standard_normal((2, 2048)), jnp.float32)
  same = _mrstft(ref, ref, losses.DEFAULT_RESOLUTIONS)
  assert float(same["loss"]) < 1e-5
  noisy = _mrstft(ref + 0.3 * jnp.asarray(rng.standard_normal((2, 2048)), jnp.float32), ref,
                 losses.DEFAULT_RESOLUTIONS)
  assert float(noisy["loss"]) > 0.1
  # Spectral convergence at one resolution against a direct numpy STFT.
  x, y = np.asarray(ref[0], np.float64), np.asarray(ref[1], np.float64)
  w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(128) / 128)
  mag = lambda s: np.abs(np.stack([np.fft.rfft(s[i:i + 128] * w)
                                   for i in range(0, 2048 - 127, 32)]))
  sc = np.linalg.norm(mag(y) - mag(x)) / np.linalg.norm(mag(y))
  got = _mrstft(ref[:1], ref[1:], ((128, 32, 128),))["sc"]
  assert abs(float(got) - sc) < 1e-3


def test_adversarial_losses_and_discriminator_shapes():
  rng = np.random.default_rng(2)
  clean = jnp.asarray(rng.standard_normal((2, 2048)) * 0.1, jnp.float32)
  est = clean + jnp.asarray(rng.standard_normal((2, 2048)) * 0.05, jnp.float32)
  mrd = disc_lib.MultiResolutionDiscriminator(((256, 64, 256), (128, 32, 128)), channels=4,
                                              num_layers=2)
  p = jax.jit(mrd.init)(jax.random.key(0), clean)
  apply = jax.jit(mrd.apply)
  real, fake = apply(p, clean), apply(p, est)
  assert len(real) == 2 and len(real[0][1]) == 3  # 2 convs + post conv per resolution
  assert float(losses.feature_matching_loss(real, real)) == 0.0
  assert float(losses.feature_matching_loss(real, fake)) > 0.0
  ones = [(jnp.ones((2, 3)), []), (jnp.ones((2, 5)), [])]
  zeros = [(jnp.zeros((2, 3)), []), (jnp.zeros((2, 5)), [])]
  assert float(losses.discriminator_loss(ones, zeros)) == 0.0  # a perfect discriminator
  assert float(losses.discriminator_loss(zeros, ones)) == 4.0
  assert float(losses.generator_adversarial_loss(ones)) == 0.0
  metric = disc_lib.MetricDiscriminator(channels=4, num_layers=2)
  mp = jax.jit(metric.init)(jax.random.key(1), clean, est)
  score = jax.jit(metric.apply)(mp, clean, est)
  assert score.shape == (2,)
  q = jnp.array([0.5, 0.25])
  want = np.mean((np.asarray(score) - 1.0) ** 2) + np.mean((np.asarray(score) - q) ** 2)
  got = losses.metric_discriminator_loss(score, score, q)
  assert abs(float(got) - want) < 1e-6
