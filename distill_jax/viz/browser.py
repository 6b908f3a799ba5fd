"""The latent page in headless Chromium (Playwright), offline: timing, errors and screenshots.

`offline_page` opens a page from a file:// URL with every other request aborted and recorded,
and collects console and page errors; `load` waits for the page's first render and returns the
load time and the page's own script time; `screenshots` saves the page at its last and its
first checkpoint (what the README shows). Used by `launch/visualize.py --screenshots=DIR` and
tests/viz/test_browser.py. Needs /usr/bin/chromium (or $DISTILL_JAX_CHROMIUM) and the
`playwright` pip package (bash install.sh --test installs both); it never downloads a browser.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Iterator

CHROMIUM = os.environ.get("DISTILL_JAX_CHROMIUM", "/usr/bin/chromium")
ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run")


def _sync_api():
  try:
    from playwright import sync_api  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError("the browser check needs playwright: pip install playwright "
                      "(bash install.sh --test)") from e
  if not os.path.exists(CHROMIUM):
    raise FileNotFoundError(f"{CHROMIUM} is missing: apt-get install chromium (bash install.sh "
                            "--test), or set DISTILL_JAX_CHROMIUM")
  return sync_api


@contextlib.contextmanager
def offline_page(html_path: str, viewport: tuple[int, int] = (1300, 1000)
                 ) -> Iterator[tuple[Any, dict]]:
  """Yields (playwright page, log) for `html_path`; nothing but the page itself is fetched.

  log: `url` of the page, `requests` (every URL the page asked for), `blocked` (those aborted:
  all but the page), `console_errors` (console errors and uncaught page errors).
  """
  sync_api = _sync_api()
  url = "file://" + os.path.abspath(html_path)
  log = dict(url=url, requests=[], blocked=[], console_errors=[])

  def route(r):
    if r.request.url == url:
      r.continue_()
    else:
      log["blocked"].append(r.request.url)
      r.abort()

  with sync_api.sync_playwright() as pw:
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=list(ARGS), headless=True)
    try:
      ctx = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
      ctx.route("**/*", route)
      pg = ctx.new_page()
      pg.on("request", lambda r: log["requests"].append(r.url))
      pg.on("console", lambda m: log["console_errors"].append(m.text) if m.type == "error"
            else None)
      pg.on("pageerror", lambda e: log["console_errors"].append(str(e)))
      yield pg, log
    finally:
      browser.close()


def load(pg: Any, url: str) -> dict[str, float]:
  """Opens `url` and waits for the first render: {load_s (navigation to first render, wall),
  render_ms (the page's own decode + first render time, `LATENT.renderMs`)}."""
  t0 = time.time()
  pg.goto(url, wait_until="load")
  pg.wait_for_function("window.LATENT && window.LATENT.state.renders > 0")
  return dict(load_s=time.time() - t0, render_ms=float(pg.evaluate("window.LATENT.renderMs")))


def external_requests(log: dict) -> list[str]:
  """Requests other than the page itself and inline data: URLs (should be none)."""
  return [r for r in log["requests"] if r != log["url"] and not r.startswith("data:")]


def screenshots(html_path: str, out_dir: str, prefix: str = "latent") -> dict[str, Any]:
  """Saves OUT_DIR/PREFIX_last.png (the page as it opens: the last checkpoint) and
  PREFIX_first.png (the checkpoint slider moved to the first one), full page.

  Returns the timing of `load`, the files, and the page's errors and external requests (both
  should be empty; the caller decides what to do with them).
  """
  os.makedirs(out_dir, exist_ok=True)
  files = {k: os.path.join(out_dir, f"{prefix}_{k}.png") for k in ("last", "first")}
  with offline_page(html_path) as (pg, log):
    info = load(pg, log["url"])
    pg.screenshot(path=files["last"], full_page=True)
    slider = pg.locator("#ckpt")
    slider.focus()
    pg.keyboard.press("Home")
    pg.screenshot(path=files["first"], full_page=True)
    info.update(files=files, console_errors=list(log["console_errors"]),
                external_requests=external_requests(log), blocked=list(log["blocked"]))
  return info
