"""The page in a real browser: headless Debian Chromium driven by Playwright, offline.

Opens the generated page from a file:// URL with every request routed and failed (and
recorded), then checks: no console errors or page errors, no request other than the page
itself, a click on the spectrogram moves the playhead and the trajectory markers, the
checkpoint slider changes the student's path, and the TSV export has __seq_next__ links.
Screenshots go to a tmp folder (printed). Needs /usr/bin/chromium and the `playwright` pip
package (bash install.sh --test installs both); it never downloads a browser.
"""

import os
import time

import pytest

from distill_jax.viz import data as data_lib
from distill_jax.viz import page

CHROMIUM = os.environ.get("DISTILL_JAX_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.mark.slow  # 110 s (a distill run + Chromium)
def test_page_in_headless_chromium(kd_run, tmp_path):
  sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright "
                                 "(bash install.sh --test)")
  if not os.path.exists(CHROMIUM):
    pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (bash install.sh --test)")
  d = data_lib.compute_page_data(kd_run, split="test", utterances=2, fit_utterances=8)
  out = str(tmp_path / "latent.html")
  info = page.write_page(d, out)
  url = "file://" + os.path.abspath(out)
  shots = tmp_path / "screenshots"
  shots.mkdir()
  requests, blocked, console_errors = [], [], []
  with sync_api.sync_playwright() as pw:
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
    ctx = browser.new_context(viewport={"width": 1300, "height": 1000})
    def route(r):
      if r.request.url == url:
        r.continue_()
      else:
        blocked.append(r.request.url)
        r.abort()
    ctx.route("**/*", route)
    pg = ctx.new_page()
    pg.on("request", lambda r: requests.append(r.url))
    pg.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: console_errors.append(str(e)))
    t0 = time.time()
    pg.goto(url, wait_until="load")
    pg.wait_for_function("window.LATENT && window.LATENT.state.renders > 0")
    load_s = time.time() - t0
    render_ms = pg.evaluate("window.LATENT.renderMs")
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
    browser.close()
  print(f"\npage {info['bytes'] / 2 ** 20:.3f} MB, load {load_s:.2f} s, script {render_ms:.0f} "
        f"ms; screenshots in {shots}")
  assert console_errors == [], console_errors
  assert blocked == [] and [r for r in requests if not r.startswith("data:")] == [url], requests
  assert len(os.listdir(shots)) == 3
