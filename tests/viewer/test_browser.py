"""The post-processing toggle in a real browser: headless chromium (Debian's package, driven by playwright, no
browser download) on nerfstudio's viewer serving a tiny difix-splatfacto run on 127.0.0.1.

Checks what a user sees: the "Difix post-processing" checkbox found by its label switches the server's model, the
image in the canvas changes, the latency read-out shows a number, the render reaches the viewer's full resolution
with post-processing on, and the viewer idles once the camera is still. Screenshots are kept in the test's tmp
folder (printed at the end; `pytest -s` shows the path).
"""

from __future__ import annotations

import io
import re
import shutil
import time

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium")
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--no-first-run", "--disable-sync", "--disable-quic",
]
WAIT_S = 90.0  # the most any single step may take (CPU renders on 2 shared cores)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="chromium not found: the browser test needs the Debian package chromium (make system-deps installs it)",
    ),
]


def _wait(page, condition, what: str, timeout_s: float = WAIT_S):
    """Poll `condition()` until it returns something truthy (returned), keeping the browser connection served."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        page.wait_for_timeout(200)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _full_res_render(served, since: float, postprocess: bool):
    """The first render since `since` at the viewer's full resolution with post-processing `postprocess`."""
    max_res = served.viewer.control_panel.max_res
    for _, height, width, on in served.log.since(since):
        if on == postprocess and max(height, width) == max_res:
            return height, width
    return None


def _shown_resolution(page):
    """(width, height) of the viewer's "Resolution: WxHpx" read-out, as the browser shows it."""
    match = re.search(r"Resolution:\s*(\d+)x(\d+)px", page.inner_text("body"))
    return (int(match.group(1)), int(match.group(2))) if match else None


def _canvas(page, path) -> np.ndarray:
    from PIL import Image

    png = page.locator("canvas").first.screenshot(path=str(path))
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32)


def test_post_processing_toggle_in_a_real_browser(served, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (test extras) is not installed")
    model, log = served.model, served.log
    assert not model.postprocess_enabled
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, timeout=WAIT_S * 1000)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(WAIT_S * 1000)
            opened = time.monotonic()
            page.goto(served.url)
            checkbox = page.get_by_label("Difix post-processing")
            checkbox.wait_for(state="visible")  # the GUI arrives over the websocket: connected
            assert not checkbox.is_checked()
            _wait(page, lambda: _full_res_render(served, opened, postprocess=False), "a full-resolution raw render")
            page.wait_for_timeout(1000)  # let the browser draw it
            raw = _canvas(page, tmp_path / "1_postprocess_off_canvas.png")
            page.screenshot(path=str(tmp_path / "1_postprocess_off.png"))

            toggled = time.monotonic()
            checkbox.click()
            _wait(page, lambda: model.postprocess_enabled, "the server's model to switch post-processing on")
            height, width = _wait(
                page, lambda: _full_res_render(served, toggled, postprocess=True),
                "a full-resolution render with post-processing on",
            )
            shown = _wait(
                page, lambda: _shown_resolution(page) == (width, height), f"the browser to show {width}x{height}px"
            )
            page.mouse.move(10, 400)  # away from the checkbox: its tooltip would hide the latency read-out
            page.wait_for_timeout(1000)
            fixed = _canvas(page, tmp_path / "2_postprocess_on_canvas.png")
            page.screenshot(path=str(tmp_path / "2_postprocess_on.png"))
            assert shown and fixed.shape == raw.shape
            assert np.abs(fixed - raw).mean() > 20.0, "the canvas did not change with post-processing on"
            latency = page.get_by_label("Fixer latency (ms)").input_value()
            assert float(latency) > 0.0, f"latency read-out: {latency!r}"

            # a still camera: no more renders, (almost) no CPU
            page.wait_for_timeout(1000)
            still, cpu = time.monotonic(), time.process_time()
            page.wait_for_timeout(5000)
            busy_s, renders = time.process_time() - cpu, log.since(still)
            assert renders == [], f"{len(renders)} renders in 5 s with a still camera (sizes {renders[-3:]})"
            assert busy_s < 1.5, f"the idle viewer used {busy_s:.1f} s of CPU in 5 s"

            checkbox.click()
            _wait(page, lambda: not model.postprocess_enabled, "the server's model to switch post-processing off")
            page.screenshot(path=str(tmp_path / "3_postprocess_off_again.png"))
        finally:
            browser.close()
    print(
        f"viewer with post-processing on: {width}x{height} px, fixer latency {latency} ms; "
        f"still camera: {len(renders)} renders and {busy_s:.2f} s of CPU in 5 s; screenshots in {tmp_path}"
    )
