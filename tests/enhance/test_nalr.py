"""enhance/nalr.py: the NAL-R prescription, its bin gains, and pyclarity's NALR as the reference."""

import numpy as np
import pytest

from distill_jax.enhance import nalr


def test_flat_loss_gives_the_textbook_gains():
  flat = {f: 40.0 for f in nalr.FREQS}
  # X = 0.05 * 120 = 6; G = 6 + 0.31 * 40 + k = 18.4 + k.
  np.testing.assert_allclose(nalr.nalr_gains_db(flat), 18.4 + np.asarray(nalr.BIAS_DB),
                             atol=1e-9)
  # Normal hearing: G = k, negative gains set to 0 (1 dB left at 1 kHz).
  np.testing.assert_array_equal(nalr.nalr_gains_db({f: 0.0 for f in nalr.FREQS}),
                                [0, 0, 1, 0, 0, 0])


def test_bin_gains_hit_the_prescription_at_the_audiogram_frequencies():
  a = nalr.named("sloping")
  g = nalr.bin_gains(a, 257, 16000)
  freqs = np.linspace(0, 8000, 257)
  for f, want in zip(nalr.FREQS, nalr.nalr_gains_db(a)):
    k = int(np.argmin(np.abs(freqs - f)))
    assert abs(20 * np.log10(g[k]) - want) < 0.6, f
  assert g[0] == g[np.argmin(np.abs(freqs - 250))] and g[-1] == g[np.argmin(np.abs(freqs - 6000))]


def test_bad_audiograms_are_named():
  with pytest.raises(ValueError, match=r"no threshold at \[6000\]"):
    nalr.nalr_gains_db({f: 20.0 for f in nalr.FREQS[:-1]})
  with pytest.raises(ValueError, match="outside"):
    nalr.nalr_gains_db({f: 200.0 for f in nalr.FREQS})
  with pytest.raises(ValueError, match="'500-20'"):
    nalr.parse_audiogram("250:10,500-20")
  with pytest.raises(ValueError, match="'loud'"):
    nalr.named("loud")


@pytest.mark.parametrize("name", sorted(nalr.AUDIOGRAMS))
def test_gains_match_pyclaritys_nalr_filter(name):
  """Reference: clarity.enhancer.nalr.NALR (the Clarity baseline's 220-tap FIR). Its magnitude
  response at the audiogram frequencies within 1.5 dB of ours (an FIR of 220 taps at 16 kHz
  resolves ~70 Hz, so the curve between 250 and 500 Hz is smoothed)."""
  pytest.importorskip("clarity.enhancer.nalr", reason="pyclarity not installed "
                      "(requirements-anchors.txt)")
  from clarity.enhancer.nalr import NALR
  from clarity.utils.audiogram import Audiogram
  from scipy import signal
  levels = np.asarray(nalr.AUDIOGRAMS[name], float)
  fir, _ = NALR(nfir=220, sample_rate=16000).build(
      Audiogram(levels=levels, frequencies=np.asarray(nalr.FREQS)))
  _, h = signal.freqz(fir, worN=np.asarray(nalr.FREQS, float), fs=16000)
  np.testing.assert_allclose(20 * np.log10(np.abs(h)),
                             nalr.nalr_gains_db(dict(zip(nalr.FREQS, levels))), atol=1.5)
