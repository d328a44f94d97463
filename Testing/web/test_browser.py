"""End to end: `cyclegan-explain-web` in a subprocess, driven through Debian's chromium (headless).

The server opens the default sample CT (the real one, LungPETCTDxChestCT) with every view centred
and zoomed on its documented tumour T1, so a click at the centre of the axial view is a click on T1
(the page then reports the seed's RAS, which the test checks against the sample's JSON). Pixels
are read from screenshots of the axial view: the overlay's red or blue must appear around the
click, and must be absent before it; the seed marker must leave the click's own pixels visible.

Needs chromium and the EGL/GL libraries (scripts/install-system-deps.sh). Without chromium the
tests skip locally and FAIL when the environment variable CI is set; the tests that take no page
(plain HTTP requests to the server) run without it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from CycleGANExplainLib.attribution_methods import DEFAULT_METHOD, METHODS
from CycleGANExplainLib.model_bundle import default_bundle_dir, read_metadata, shipped_bundles
from CycleGANExplainLib.nodule_stack import DEFAULT_HALF_EXTENT_MM
from CycleGANExplainLib.notices import LIDC_IDRI_CITATIONS, LIDC_IDRI_LICENCE
from CycleGANExplainLib.overlay import legend_entries
from CycleGANExplainLib.sample_data import DEFAULT_SAMPLE, sample_nodule, sample_notice

REPO_ROOT = Path(__file__).resolve().parents[2]
# The page's volume line once the sample is open.
SAMPLE_OPEN = f"document.querySelector('#volume-text')?.innerText.includes({json.dumps(DEFAULT_SAMPLE)})"
# The viewport every test's browser has: probabilities and errors must show in it without scrolling.
VIEWPORT = {"width": 1400, "height": 900}
# The README's screenshot is refreshed only on request, so a test run never modifies the repository:
#   CYCLEGAN_EXPLAIN_SCREENSHOTS=Resources/Screenshots pytest Testing/web
SCREENSHOT_DIR_VARIABLE = "CYCLEGAN_EXPLAIN_SCREENSHOTS"
SERVER_START_TIMEOUT_S = 90
EXPLAIN_TIMEOUT_MS = 60_000
CHROMIUM_FLAGS = [
    "--no-sandbox",  # root in a container
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Coloured overlay pixels: one channel well above the other two (the CT below is grey, the seed yellow).
COLOUR_MARGIN = 40
# Around the click, inside the 45 mm patch at any zoom where the whole CT fits the view.
NEAR_CLICK_PX = 14
# A trained bundle may leave parts of the patch near zero (transparent), so ask for some colour, not all.
MIN_OVERLAY_PIXELS = 40


def _missing(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the browser tests must run; see scripts/install-system-deps.sh)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    _missing("chromium is not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def browser_context(chromium, tmp_path_factory):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),  # a fresh --user-data-dir
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport=VIEWPORT,
        )
        yield context
        context.close()


class ViewerServer:
    """`cyclegan-explain-web` on a free port; its URL is read from its stdout."""

    URL_PATTERN = re.compile(r"http://127\.0\.0\.1:\d+/\?secret=[\w-]+")

    def __init__(self, log_path: Path, *extra_args: str) -> None:
        self.log = open(log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cyclegan_explain_web.cli", "--port", "0", "--device", "cpu", *extra_args],
            stdout=subprocess.PIPE, stderr=self.log, text=True, cwd=REPO_ROOT,
        )
        lines: "queue.Queue[str]" = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in self.process.stdout], daemon=True).start()
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                match = self.URL_PATTERN.search(lines.get(timeout=1.0))
            except queue.Empty:
                match = None
                if self.process.poll() is not None:
                    break
            if match:
                self.url = match.group(0)
                return
        self.stop()
        pytest.fail(f"the web viewer did not print its URL; its log:\n{Path(log_path).read_text()[-3000:]}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@contextlib.contextmanager
def viewer_page(browser_context, log_path: Path, *server_args: str):
    """A fresh server (one session's state) and the page showing it, ready for clicks."""
    server = ViewerServer(log_path, *server_args)
    page = browser_context.new_page()
    try:
        page.goto(server.url)
        page.wait_for_function(SAMPLE_OPEN, timeout=30_000)
        axial_view_image(page)
        yield page
    finally:
        page.close()
        server.stop()


@pytest.fixture
def page(browser_context, tmp_path):
    with viewer_page(browser_context, tmp_path / "server.log") as page:
        yield page


def axial_view_image(page, timeout_s: float = 30.0) -> np.ndarray:
    """RGB pixels of the axial view once its image has stopped changing (rendering settled)."""
    from PIL import Image

    view = page.locator("img").first  # the layout's first view is the axial one
    view.wait_for(state="visible", timeout=int(timeout_s * 1000))
    previous = None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pixels = np.asarray(Image.open(io.BytesIO(view.screenshot())).convert("RGB")).astype(int)
        if previous is not None and pixels.shape == previous.shape and np.array_equal(pixels, previous) \
                and pixels.max() > 0:
            return pixels
        previous = pixels
        time.sleep(0.4)
    raise AssertionError("the axial view kept changing (or stayed black)")


def axial_view_point(page, fx: float, fy: float) -> "tuple[float, float]":
    """Page coordinates of the point at fractions (fx, fy) of the axial view's width and height."""
    box = page.locator("img").first.bounding_box()
    return box["x"] + fx * box["width"], box["y"] + fy * box["height"]


def overlay_pixel_count(pixels: np.ndarray, centre_xy: "tuple[int, int]", radius: int) -> int:
    """Red or blue (overlay) pixels within ``radius`` of ``centre_xy``."""
    x, y = centre_xy
    window = pixels[max(0, y - radius):y + radius + 1, max(0, x - radius):x + radius + 1]
    red, green, blue = window[..., 0], window[..., 1], window[..., 2]
    reddish = (red > green + COLOUR_MARGIN) & (red > blue + COLOUR_MARGIN)
    bluish = (blue > red + COLOUR_MARGIN) & (blue > green + COLOUR_MARGIN)
    return int(np.count_nonzero(reddish | bluish))


def wait_for_overlay(page, centre_xy, shown: bool, timeout_s: float = 20.0) -> np.ndarray:
    """The axial view's pixels once overlay colour near ``centre_xy`` is shown (or gone)."""
    deadline = time.monotonic() + timeout_s
    while True:
        pixels = axial_view_image(page)
        count = overlay_pixel_count(pixels, centre_xy, NEAR_CLICK_PX)
        if (count >= MIN_OVERLAY_PIXELS) if shown else (count == 0):
            return pixels
        if time.monotonic() > deadline:
            raise AssertionError(f"{count} red or blue pixels near the click; expected "
                                 + (f"at least {MIN_OVERLAY_PIXELS}" if shown else "none"))


def seed_ras(page) -> np.ndarray:
    text = page.locator("#seed-text").inner_text()
    return np.array([float(value) for value in re.findall(r"-?\d+\.\d", text)])


def nodule_centre() -> np.ndarray:
    """The documented nodule the default sample opens on."""
    return np.array(sample_nodule().centre_ras_mm, dtype=float)


def outside_volume_point(page) -> "tuple[float, float]":
    """Page coordinates of a point beyond the CT, low in the coronal view (the second view; above
    its slice slider). The sample opens zoomed to 150 mm across, centred on its tumour at S = 184 mm,
    and the CT starts at S = 164 mm, so 40 % of the view below its centre lies about 40 mm below it."""
    box = page.locator("img").nth(1).bounding_box()
    return box["x"] + 0.5 * box["width"], box["y"] + 0.9 * box["height"]


def wait_for_error(page, fragment: str) -> str:
    page.wait_for_function(
        f"document.querySelector('#error-message')?.innerText.includes({json.dumps(fragment)})", timeout=30_000
    )
    return page.locator("#error-message").inner_text()


def test_click_on_nodule_shows_overlay_and_probabilities(page, tmp_path):
    before = axial_view_image(page)
    height, width = before.shape[:2]
    centre = (width // 2, height // 2)
    assert overlay_pixel_count(before, centre, NEAR_CLICK_PX) == 0, "coloured pixels before any click"

    page.mouse.click(*axial_view_point(page, 0.5, 0.5))
    page.locator("#probabilities").wait_for(state="visible", timeout=EXPLAIN_TIMEOUT_MS)

    # The click's RAS came from the view's own geometry: the view is centred on the tumour.
    np.testing.assert_allclose(seed_ras(page), nodule_centre(), atol=2.0)
    assert "Explained the point clicked in the axial view." in page.locator("#status-text").inner_text()
    for key in ("p-x", "p-pos", "p-neg"):
        value = float(page.locator(f"#probability-{key}").inner_text())
        assert 0.0 <= value <= 1.0
    metadata = read_metadata(default_bundle_dir())
    assert metadata.display_name in page.locator("#bundle-name").inner_text()
    assert page.locator("#untrained-warning").is_visible() == (not metadata.trained)
    assert "Research use only" in page.locator("#research-notice").inner_text()
    attribution = " ".join(page.locator("#data-attribution").inner_text().split())
    assert LIDC_IDRI_LICENCE in attribution and all(citation in attribution for citation in LIDC_IDRI_CITATIONS)
    assert page.locator("#device-used").inner_text().startswith("Device: cpu")
    legend = page.locator("#legend")
    for index, (rgb, meaning) in enumerate(legend_entries(DEFAULT_METHOD)):  # the overlay's colours and words
        assert meaning in legend.inner_text()
        swatch = legend.locator("span[style*='background']").nth(index)
        expected = "rgb({}, {}, {})".format(*(round(channel * 255) for channel in rgb))
        assert swatch.evaluate("element => getComputedStyle(element).backgroundColor") == expected

    wait_for_overlay(page, centre, shown=True)
    screenshot_dir = Path(os.environ.get(SCREENSHOT_DIR_VARIABLE) or tmp_path)
    screenshot_dir.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(screenshot_dir / "web_viewer.png"))
    assert (screenshot_dir / "web_viewer.png").stat().st_size > 10_000

    page.locator("#show-overlay").click()  # hide: the CT alone again
    wait_for_overlay(page, centre, shown=False)
    page.locator("#show-overlay").click()
    wait_for_overlay(page, centre, shown=True)

    # A second click, higher up on the screen (anterior), moves the seed and explains again.
    first_seed, first_text = seed_ras(page), page.locator("#seed-text").inner_text()
    page.mouse.click(*axial_view_point(page, 0.5, 0.45))
    page.wait_for_function(f"document.querySelector('#seed-text')?.innerText !== {json.dumps(first_text)}",
                           timeout=EXPLAIN_TIMEOUT_MS)
    moved = seed_ras(page) - first_seed
    # Zoomed: 150 mm across the view's narrower side, so 5 % of its height is this many mm.
    box = page.locator("img").first.bounding_box()
    expected_mm = 0.05 * box["height"] * 150.0 / min(box["width"], box["height"])
    assert moved[1] == pytest.approx(expected_mm, rel=0.1), \
        f"the seed should move {expected_mm:.1f} mm anterior, moved {moved}"
    assert abs(moved[0]) < 1.0 and abs(moved[2]) < 1.0, f"the seed should move along A only, moved {moved}"
    assert page.locator("#probabilities").is_visible()


def test_bad_input_shows_message_and_session_goes_on(page, tmp_path):
    page.mouse.click(*outside_volume_point(page))
    assert "outside the volume" in wait_for_error(page, "Could not explain the clicked point")
    assert not page.locator("#probabilities").is_visible()

    garbage = tmp_path / "garbage.nrrd"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    file_input = page.locator("input[type=file]:not([webkitdirectory])")
    file_input.set_input_files(str(garbage))
    wait_for_error(page, "Could not open garbage.nrrd")

    not_ct = tmp_path / "mr_like.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((8, 32, 32), 300, dtype=np.int16)), str(not_ct))
    file_input.set_input_files(str(not_ct))
    assert "air" in wait_for_error(page, "Could not open mr_like.nii.gz")
    assert DEFAULT_SAMPLE in page.locator("#volume-text").inner_text(), "the sample CT stays open"

    # The session goes on: a click on the nodule is explained and the error goes away.
    page.mouse.click(*axial_view_point(page, 0.5, 0.5))
    page.locator("#probabilities").wait_for(state="visible", timeout=EXPLAIN_TIMEOUT_MS)
    np.testing.assert_allclose(seed_ras(page), nodule_centre(), atol=2.0)
    assert page.locator("#error-message").count() == 0


def probabilities(page) -> dict:
    return {key: float(page.locator(f"#probability-{key}").inner_text()) for key in ("p-x", "p-pos", "p-neg")}


def test_bundle_chooser_lists_the_shipped_bundles_with_the_default_selected(page):
    default = read_metadata(default_bundle_dir())
    assert default.display_name in page.locator("#bundle-select").inner_text()
    page.locator("#bundle-select").click()
    listed = page.locator(".v-overlay .v-list-item")
    listed.first.wait_for(state="visible", timeout=10_000)
    assert listed.all_inner_texts() == [read_metadata(path).display_name for path in shipped_bundles()]
    page.keyboard.press("Escape")


def test_choosing_another_bundle_explains_the_seed_again_with_it(browser_context, tmp_path, tiny_bundle):
    """Started on a bundle folder (the untrained tiny one), then a shipped bundle chosen in the page:
    the same seed is explained again with the chosen bundle's networks."""
    with viewer_page(browser_context, tmp_path / "server.log", "--bundle", str(tiny_bundle), "--allow-unknown-bundle") as page:
        tiny = read_metadata(tiny_bundle)
        assert tiny.display_name in page.locator("#bundle-name").inner_text()
        assert page.locator("#untrained-warning").is_visible()

        page.mouse.click(*axial_view_point(page, 0.5, 0.5))
        page.locator("#probabilities").wait_for(state="visible", timeout=EXPLAIN_TIMEOUT_MS)
        seed_before, with_tiny = seed_ras(page), probabilities(page)

        # The bundle trained on real CT: lidc-phantoms' generators fail on the real sample's tumour.
        shipped = read_metadata(default_bundle_dir())
        page.locator("#bundle-select").click()
        page.locator(".v-overlay .v-list-item", has_text=shipped.display_name).click()
        page.wait_for_function(
            f"document.querySelector('#bundle-name')?.innerText.includes({json.dumps(shipped.display_name)})",
            timeout=30_000)
        explained_again = f"Explained the seed with {shipped.name} {shipped.version}."
        page.wait_for_function(f"document.querySelector('#status-text')?.innerText.includes({json.dumps(explained_again)})",
                               timeout=EXPLAIN_TIMEOUT_MS)
        np.testing.assert_allclose(seed_ras(page), seed_before)  # the same seed
        assert probabilities(page) != with_tiny
        assert page.locator("#untrained-warning").count() == (0 if shipped.trained else 1)
        assert shipped.trained_on in page.locator("#bundle-summary").inner_text()
        height, width = axial_view_image(page).shape[:2]
        wait_for_overlay(page, (width // 2, height // 2), shown=True)


def http_get(url: str, headers: "dict | None" = None) -> "tuple[int, str]":
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_the_session_needs_its_token_and_serves_one_browser(browser_context, tmp_path):
    server = ViewerServer(tmp_path / "server.log")
    base = server.url.split("?")[0]
    try:
        status, body = http_get(base)  # no token: nothing of the session
        assert status == 403 and "Access token needed" in body
        status, body = http_get(base + "?secret=wrong-token")
        assert status == 403
        page = browser_context.new_page()
        page.goto(server.url)
        page.wait_for_function(SAMPLE_OPEN, timeout=30_000)
        # Another browser (no cookies of this one), even with the token: told the viewer is busy.
        status, body = http_get(server.url)
        assert status == 409 and "Another browser is connected to this viewer" in body
        token = server.url.split("secret=")[1]
        status, _ = http_get(base + "ws", {"Cookie": f"cyclegan_explain_access={token}"})
        assert status == 409  # its websocket would be refused too
        page.reload()  # the browser holding the session keeps it across a reload
        page.wait_for_function(SAMPLE_OPEN, timeout=30_000)
        page.close()
        deadline = time.monotonic() + 20
        while http_get(server.url)[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert http_get(server.url)[0] == 200  # free again once that browser has gone
    finally:
        server.stop()


def test_the_page_needs_the_token_however_its_path_is_spelt(tmp_path):
    """Real HTTP requests, no browser: the static handler serves index.html for each of these
    spellings, so each must need the token like /index.html itself (issue 23, item 16)."""
    server = ViewerServer(tmp_path / "server.log")
    base = server.url.split("?")[0].rstrip("/")
    token = server.url.split("secret=")[1]
    try:
        status, body = http_get(f"{base}/index.html?secret={token}")
        assert status == 200 and "<html" in body.lower()
        for path in ("/index.html", "/./index.html", "/index.html/", "/static/../index.html", "//index.html",
                     "/%2e/index.html", "/index.html%2f", "/js/..//./index.html/"):
            status, body = http_get(base + path)
            assert status == 403 and "Access token needed" in body, path
    finally:
        server.stop()


def test_after_a_burst_of_clicks_the_next_click_is_explained_and_an_error_clears_the_result(page):
    """The burst's coalescing is tested in-process (test_viewer_click_coalescing); the browser's
    remote view may merge or drop clicks of a burst, so here: the session stays usable and exact."""
    page.mouse.click(*axial_view_point(page, 0.5, 0.5))
    page.locator("#probabilities").wait_for(state="visible", timeout=EXPLAIN_TIMEOUT_MS)
    first = seed_ras(page)
    for step in range(12):  # a burst across the nodule
        page.mouse.click(*axial_view_point(page, 0.47 + 0.005 * step, 0.5))
    time.sleep(1.0)
    page.wait_for_function("!document.querySelector('#busy-indicator')", timeout=EXPLAIN_TIMEOUT_MS)
    page.mouse.click(*axial_view_point(page, 0.5, 0.53))  # a new point, below the first
    page.wait_for_function(f"document.querySelector('#seed-text')?.innerText.includes({json.dumps(f'{first[0]:.1f}, ')})"
                           f" && !document.querySelector('#seed-text')?.innerText.includes({json.dumps(f', {first[1]:.1f},')})"
                           " && !document.querySelector('#busy-indicator')", timeout=EXPLAIN_TIMEOUT_MS)
    assert seed_ras(page)[1] < first[1]  # lower in the axial view: towards posterior

    page.mouse.click(*outside_volume_point(page))
    wait_for_error(page, "outside the volume")
    assert not page.locator("#probabilities").is_visible(), "the previous seed's probabilities stayed on screen"


def test_a_session_prints_no_vtk_deprecation_notice_unless_verbose(browser_context, tmp_path):
    """trame-slicer's views cause VTK 9.6's WindowResizeEvent deprecation notice; the viewer hides
    that message alone (test_vtk_warnings checks that other VTK warnings still show) and its own
    resize observer uses the render window's event. --verbose shows trame-slicer's again."""
    log_path = tmp_path / "server.log"
    with viewer_page(browser_context, log_path) as page:
        page.set_viewport_size({"width": 1100, "height": 760})  # the browser resizes every view
        axial_view_image(page)
        page.mouse.click(*axial_view_point(page, 0.5, 0.5))
        page.locator("#probabilities").wait_for(state="visible", timeout=EXPLAIN_TIMEOUT_MS)
        # Refitted to the new size, still centred on the tumour: the server kept working.
        np.testing.assert_allclose(seed_ras(page), nodule_centre(), atol=2.0)
    log = log_path.read_text()
    assert "WindowResizeEvent" not in log, log[-3000:]

    verbose_log = tmp_path / "verbose.log"
    ViewerServer(verbose_log, "--verbose").stop()  # the views are created before the URL is printed
    assert "WindowResizeEvent" in verbose_log.read_text()


def test_choosing_a_method_in_the_page_shows_its_map_and_legend(page):
    page.mouse.click(*axial_view_point(page, 0.5, 0.5))
    page.locator("#probabilities").wait_for(state="visible", timeout=EXPLAIN_TIMEOUT_MS)
    assert METHODS[DEFAULT_METHOD].label in page.locator("#method-used").inner_text()
    before = probabilities(page)

    chosen = METHODS["saliency"]
    page.locator("#method-select").click()
    page.locator(".v-overlay .v-list-item", has_text=chosen.label).click()
    page.wait_for_function(f"document.querySelector('#method-used')?.innerText.includes({json.dumps(chosen.label)})",
                           timeout=EXPLAIN_TIMEOUT_MS)
    legend = page.locator("#legend").inner_text()
    assert "unsigned map" in legend and "blue =" not in legend  # saliency is magnitude only
    assert chosen.map_title in page.locator("#map-title").inner_text()
    assert probabilities(page) == before  # the same networks give the probabilities
    height, width = axial_view_image(page).shape[:2]
    wait_for_overlay(page, (width // 2, height // 2), shown=True)


def yellow_mask(pixels: np.ndarray) -> np.ndarray:
    """The seed marker's yellow (viewer.SEED_COLOUR), never the overlay's red or blue nor the grey CT."""
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    return (red > 170) & (green > 150) & (blue < red - 80) & (blue < green - 80)


def in_view(page, selector: str) -> dict:
    """Where ``selector`` is, against the panel's and the window's visible area (CSS pixels)."""
    return page.locator(selector).evaluate(
        "element => { const box = element.getBoundingClientRect();"
        " const panel = element.closest('.v-navigation-drawer').getBoundingClientRect();"
        " const scroller = element.closest('.v-navigation-drawer__content');"
        " return {top: box.top, bottom: box.bottom, panel_top: panel.top, panel_bottom: panel.bottom,"
        " window: window.innerHeight, scrolled: scroller ? scroller.scrollTop : 0,"
        " overflow: scroller ? scroller.scrollHeight - scroller.clientHeight : 0}; }")


def assert_visible_without_scrolling(page, selector: str) -> None:
    place = in_view(page, selector)
    assert place["scrolled"] == 0, place
    assert place["panel_top"] <= place["top"] and place["bottom"] <= min(place["panel_bottom"], place["window"]), \
        f"{selector} is not wholly in view at {VIEWPORT['width']} x {VIEWPORT['height']}: {place}"


def test_the_first_view_wording_and_what_stays_in_view_at_1400_by_900(page):
    # Opened on the tumour: bright soft tissue at the axial view's centre, before any click.
    before = axial_view_image(page)
    height, width = before.shape[:2]
    assert before[height // 2 - 4:height // 2 + 5, width // 2 - 4:width // 2 + 5].mean() > 120
    # The views by the names a radiologist uses; nothing calls a view by Slicer's colours.
    text = page.locator("body").inner_text()
    assert "axial, coronal or sagittal view" in page.locator("#instructions").inner_text()
    for jargon in ("Red view", "Green view", "Yellow view", "slice view"):
        assert jargon not in text
    # The real sample's attribution is on the page while it is open.
    assert sample_notice() == " ".join(page.locator("#sample-attribution").inner_text().split())

    page.mouse.click(*outside_volume_point(page))
    wait_for_error(page, "outside the volume")
    assert_visible_without_scrolling(page, "#error-message")

    page.mouse.click(*axial_view_point(page, 0.5, 0.5))
    page.locator("#probabilities").wait_for(state="visible", timeout=EXPLAIN_TIMEOUT_MS)
    for selector in ("#seed-text", "#probabilities", "#status-text"):
        assert_visible_without_scrolling(page, selector)
    if page.locator("#caveats").count():
        assert_visible_without_scrolling(page, "#caveats")
    assert "not a DICOM series" in page.locator("#dicom-note").inner_text()  # the sample is a NRRD file
    assert_visible_without_scrolling(page, "#dicom-note")

    # Another CT opened (the sample again): no result, and no status line about the old one.
    page.locator("#load-sample").click()
    page.wait_for_function("!document.querySelector('#probabilities') && !document.querySelector('#status-text')",
                           timeout=30_000)


def test_the_seed_marker_leaves_the_map_centre_visible_and_can_be_hidden(page):
    page.mouse.click(*axial_view_point(page, 0.5, 0.5))
    page.locator("#probabilities").wait_for(state="visible", timeout=EXPLAIN_TIMEOUT_MS)
    height, width = axial_view_image(page).shape[:2]
    centre_x, centre_y = width // 2, height // 2
    pixels = wait_for_overlay(page, (centre_x, centre_y), shown=True)
    yellow = yellow_mask(pixels)
    # An open circle around the seed: yellow around the click, none on the click's own pixels.
    near = yellow[centre_y - 30:centre_y + 31, centre_x - 30:centre_x + 31]
    assert near.sum() >= 20, "no seed marker around the click"
    assert not yellow[centre_y - 3:centre_y + 4, centre_x - 3:centre_x + 4].any(), "the marker hides the map's centre"

    page.locator("#show-seed").click()  # hidden: no yellow near the click, the overlay stays
    deadline = time.monotonic() + 20
    while yellow_mask(axial_view_image(page))[centre_y - 30:centre_y + 31, centre_x - 30:centre_x + 31].any():
        assert time.monotonic() < deadline, "the seed marker stayed after hiding it"
        time.sleep(0.5)
    assert overlay_pixel_count(axial_view_image(page), (centre_x, centre_y), NEAR_CLICK_PX) >= MIN_OVERLAY_PIXELS


def test_a_dicom_series_explained_downloads_its_dicom_results_as_a_zip(browser_context, tmp_path, ct_series_writer,
                                                                      lung_volume):
    volume, ijk_to_ras = lung_volume
    origin_lps = np.diag([-1.0, -1.0, 1.0]) @ ijk_to_ras[:3, 3]
    folder = tmp_path / "ct"
    ct_series_writer(folder, volume, 1.5, [origin_lps[2] + 2.5 * k for k in range(volume.shape[0])], origin_lps[:2],
                     2.5, patient_name="ZZBROWSER^DOWNLOAD")
    server = ViewerServer(tmp_path / "server.log", str(folder))  # a user's CT opens whole: its centre, the nodule
    page = browser_context.new_page()
    try:
        page.goto(server.url)
        page.wait_for_function("document.querySelector('#volume-text')?.innerText.includes('DICOM series')",
                               timeout=30_000)
        axial_view_image(page)
        page.mouse.click(*axial_view_point(page, 0.5, 0.5))
        page.locator("#probabilities").wait_for(state="visible", timeout=EXPLAIN_TIMEOUT_MS)
        assert page.locator("#dicom-note").count() == 0
        assert_visible_without_scrolling(page, "#download-dicom")
        with page.expect_download(timeout=60_000) as download:
            page.locator("#download-dicom").click()
        assert download.value.suggested_filename == "cyclegan-explain-dicom-results.zip"
        with zipfile.ZipFile(download.value.path()) as archive:
            kinds = [(name, pydicom.dcmread(archive.open(name)).Modality) for name in archive.namelist()]
        assert kinds == [("relevance_map_01.dcm", "OT"), ("relevance_regions_01.dcm", "SEG"),
                         ("explanation_report_01.dcm", "SR")]
    finally:
        page.close()
        server.stop()


def type_half_extent(page, text: str) -> None:
    """Replace the field's number as a person does (select all, type, Enter; Tab would scroll the panel to the next field)."""
    page.locator("#half-extent-input").click()
    page.keyboard.press("Control+a")
    page.keyboard.type(text)
    page.keyboard.press("Enter")


def test_the_half_extent_field_explains_the_seed_again_and_everything_stays_in_view(page, tmp_path):
    assert page.locator("#half-extent-input").input_value() == f"{DEFAULT_HALF_EXTENT_MM:.1f}"
    page.mouse.click(*axial_view_point(page, 0.5, 0.5))
    page.locator("#slice-plot").wait_for(state="visible", timeout=EXPLAIN_TIMEOUT_MS)
    for selector in ("#seed-text", "#probabilities", "#status-text"):
        assert_visible_without_scrolling(page, selector)
    seed_text = page.locator("#seed-text").inner_text()

    type_half_extent(page, "0")  # one slice: no per-slice plot
    page.wait_for_function("!document.querySelector('#slice-plot') && !!document.querySelector('#probabilities')",
                           timeout=EXPLAIN_TIMEOUT_MS)
    assert page.locator("#seed-text").inner_text() == seed_text  # the same seed, explained again
    type_half_extent(page, "20")  # the sample's slices are 8 mm apart
    page.wait_for_function("document.querySelector('#slice-plot')?.innerText.includes('slices')",
                           timeout=EXPLAIN_TIMEOUT_MS)
    # The field sits with the other choices, below the result: back to the panel's top, the result in view.
    page.locator(".v-navigation-drawer__content").evaluate("element => { element.scrollTop = 0; }")
    for selector in ("#seed-text", "#probabilities"):
        assert_visible_without_scrolling(page, selector)
    screenshot_dir = Path(os.environ.get(SCREENSHOT_DIR_VARIABLE) or tmp_path)
    screenshot_dir.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(screenshot_dir / "web_viewer_half_extent.png"))
