"""viz/listening.py: the page holds every clip x system as playable FLAC + spectrogram, offline;
checked in headless Chromium (audio durations, decoded images, no errors, no requests)."""

import os

import numpy as np
import pytest

from distill_jax.viz import browser, listening


def _clips():
  rng = np.random.default_rng(0)
  t = np.arange(8000) / 16000
  clean = 0.3 * np.sin(2 * np.pi * 300 * t)
  out = []
  for snr in (0.0, 10.0):
    noisy = clean + 10 ** (-snr / 20) * 0.2 * rng.standard_normal(t.shape)
    out.append(dict(id=f"c{snr:g}", snr=snr,
                    audio=dict(noisy=noisy, ours=0.5 * (noisy + clean), clean=clean),
                    metrics=dict(noisy=dict(pesq=1.1 + snr / 10), ours=dict(pesq=2.0))))
  return out


def test_page_holds_every_player_and_the_means(tmp_path):
  out = str(tmp_path / "listen.html")
  info = listening.write_listening_page(_clips(), ("noisy", "ours", "clean"), out)
  text = open(out, encoding="utf-8").read()
  assert info["clips"] == 2 and text.count("<audio") == 6 and text.count("data:image/png") == 6
  assert "<td>0 dB</td><td>noisy</td><td>1.10</td>" in text  # the per-SNR mean table
  assert "http" not in text.replace("http-equiv", "")
  with pytest.raises(ValueError, match="'c0' has no audio for \\['rnnoise'\\]"):
    listening.write_listening_page(_clips(), ("noisy", "rnnoise"), out)


def test_page_plays_offline_in_chromium(tmp_path):
  pytest.importorskip("playwright.sync_api", reason="pip install playwright "
                      "(bash install.sh --test)")
  if not os.path.exists(browser.CHROMIUM):
    pytest.fail(f"{browser.CHROMIUM} is missing: apt-get install chromium (bash install.sh "
                "--test)")
  out = str(tmp_path / "listen.html")
  listening.write_listening_page(_clips(), ("noisy", "ours", "clean"), out)
  with browser.offline_page(out) as (pg, log):
    pg.goto(log["url"], wait_until="load")
    pg.wait_for_function("[...document.querySelectorAll('audio')].every(a => a.readyState >= 1)")
    durations = pg.evaluate("[...document.querySelectorAll('audio')].map(a => a.duration)")
    widths = pg.evaluate("[...document.querySelectorAll('img')].map(i => i.naturalWidth)")
    assert len(durations) == 6 and np.allclose(durations, 0.5, atol=0.01)
    assert len(widths) == 6 and min(widths) > 0
    assert log["console_errors"] == [] and browser.external_requests(log) == []


def test_clips_come_back_from_a_comparison_folder(tmp_path):
  import json
  import soundfile as sf
  (tmp_path / "audio" / "snr0_0").mkdir(parents=True)
  x = np.zeros(1600, np.float32)
  for name in ("clean", "noisy", "ours"):
    sf.write(str(tmp_path / "audio" / "snr0_0" / f"{name}.wav"), x, 16000, subtype="PCM_16")
  index = [dict(id="snr0_0", snr=0.0, clean="snr0_0/clean.wav", systems=dict(
      noisy=dict(file="snr0_0/noisy.wav", metrics=dict(pesq=1.2, estoi=0.5, sisdr=0.1)),
      ours=dict(file="snr0_0/ours.wav", metrics=dict(pesq=2.0, estoi=0.7, sisdr=9.0))))]
  (tmp_path / "audio" / "index.json").write_text(json.dumps(index))
  clips, systems = listening.clips_from_compare(str(tmp_path))
  assert systems == ["noisy", "ours", "clean"] and clips[0]["metrics"]["ours"]["sisdr"] == 9.0
  assert clips[0]["audio"]["clean"].shape == (1600,)
  with pytest.raises(FileNotFoundError, match="save_audio"):
    listening.clips_from_compare(str(tmp_path / "nowhere"))
