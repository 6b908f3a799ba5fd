"""The page in a real browser: headless Debian Chromium driven by Playwright, offline.

Opens the generated page from a file:// URL with every request routed and failed (and
recorded), then checks: no console errors or page errors, no request other than the page
itself, a click on the spectrogram moves the playhead and the trajectory markers, the
checkpoint slider changes the student's path, and the TSV export has __seq_next__ links.
Screenshots go to a tmp folder (printed). Needs /usr/bin/chromium and the `playwright` pip
package (bash install.sh --test installs both); it never downloads a browser.
"""

import os

import pytest

from distill_jax.viz import browser
from distill_jax.jobs import latent_page
from distill_jax.viz import page


@pytest.mark.slow  # 110 s (a distill run + Chromium)
def test_page_in_headless_chromium(kd_run, tmp_path):
  pytest.importorskip("playwright.sync_api", reason="pip install playwright "
                      "(bash install.sh --test)")
  if not os.path.exists(browser.CHROMIUM):
    pytest.fail(f"{browser.CHROMIUM} is missing: apt-get install chromium (bash install.sh "
                "--test)")
  d = latent_page.compute_page_data(kd_run, split="test", utterances=2, fit_utterances=8)
  out = str(tmp_path / "latent.html")
  info = page.write_page(d, out)
  shots = tmp_path / "screenshots"
  shots.mkdir()
  with browser.offline_page(out) as (pg, log):
    timing = browser.load(pg, log["url"])
    pg.screenshot(path=str(shots / "initial.png"), full_page=True)

    before = pg.evaluate("({t: LATENT.state.time, x: LATENT.state.playheadX, "
                         "m: LATENT.state.marker, frame: LATENT.state.marker.frame})")
    box = pg.locator("#spec").bounding_box()
    pg.mouse.click(box["x"] + 0.6 * box["width"], box["y"] + 0.4 * box["height"])
    after = pg.evaluate("({t: LATENT.state.time, x: LATENT.state.playheadX, "
                        "m: LATENT.state.marker, frame: LATENT.state.marker.frame})")
    dur = d.utterances[0].audio.shape[0] / 16000
    assert abs(after["t"] - 0.6 * dur) < 0.02 * dur, (before, after)
    assert after["x"] > before["x"] + 0.5 * box["width"]
    assert after["frame"] > before["frame"] and after["m"] != before["m"]

    path_last = pg.evaluate("LATENT.state.studentPath")
    slider = pg.locator("#ckpt")
    slider.focus()
    pg.keyboard.press("Home")  # the first checkpoint
    assert pg.evaluate("LATENT.state.ckpt") == 0
    path_first = pg.evaluate("LATENT.state.studentPath")
    assert len(path_first) == len(path_last) and path_first != path_last
    assert pg.locator("#ckptlabel").inner_text().startswith(f"step {d.steps[0]}")
    pg.screenshot(path=str(shots / "first_checkpoint.png"), full_page=True)
    pg.locator("#traj").screenshot(path=str(shots / "trajectory.png"))

    tsv = pg.evaluate("LATENT.exportTSV()")
    meta = tsv["metadata"].strip().split("\n")
    assert meta[0].endswith("__seq_next__")
    assert len(meta) - 1 == len(tsv["vectors"].strip().split("\n"))
    pg.locator("#utt").select_option("1")
    assert pg.evaluate("LATENT.state.utt") == 1 and pg.evaluate("LATENT.state.time") == 0
  print(f"\npage {info['bytes'] / 2 ** 20:.3f} MB, load {timing['load_s']:.2f} s, script "
        f"{timing['render_ms']:.0f} ms; screenshots in {shots}")
  assert log["console_errors"] == [], log["console_errors"]
  assert log["blocked"] == [] and browser.external_requests(log) == [], log["requests"]
  assert log["requests"][0] == log["url"]
  assert len(os.listdir(shots)) == 3


@pytest.mark.slow
def test_screenshots_of_first_and_last_checkpoint(kd_run, tmp_path):
  pytest.importorskip("playwright.sync_api")
  d = latent_page.compute_page_data(kd_run, split="test", utterances=1, fit_utterances=4)
  out = str(tmp_path / "latent.html")
  page.write_page(d, out)
  info = browser.screenshots(out, str(tmp_path / "shots"))
  assert info["console_errors"] == [] and info["external_requests"] == []
  assert info["load_s"] > 0 and info["render_ms"] > 0
  sizes = {k: os.path.getsize(f) for k, f in info["files"].items()}
  assert all(v > 10_000 for v in sizes.values()), sizes
  with open(info["files"]["last"], "rb") as a, open(info["files"]["first"], "rb") as b:
    assert a.read() != b.read()  # the slider moved: the student's path is another one
