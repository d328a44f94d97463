"""The web viewer's first click beside warm clicks, driven through Debian's chromium (headless), in one run.

    python benchmarks/web_first_click.py [--clicks 5] [--bundle NAME] [--sample NAME]

Starts `cyclegan-explain-web` on a sample CT (default: the default sample, the real one), opens
its page, which shows the sample centred on its documented nodule, and times how long the page
takes to show it, then each click on the nodule from the mouse event until the page shows the new
seed's probabilities. The first click
is the one that would pay for loading the bundle; the viewer loads it in the background at start
(target: first click <= 2x a warm click). Needs chromium and playwright, as the browser tests do.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time

from playwright.sync_api import sync_playwright

from CycleGANExplainLib.sample_data import DEFAULT_SAMPLE, SAMPLES, sample_volume_path

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def start_viewer(bundle: str, sample: str):
    command = [sys.executable, "-m", "cyclegan_explain_web.cli", str(sample_volume_path(sample)), "--port", "0",
               "--device", "cpu"]
    if bundle:
        command += ["--bundle", bundle]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in process.stdout:
        match = re.search(r"http://\S+\?secret=\S+", line)
        if match:
            return process, match.group(0)
    raise RuntimeError("the web viewer did not print its address")


def timed_click(page, fx: float, fy: float) -> float:
    """Seconds from a click at fractions (fx, fy) of the axial view until its seed is shown."""
    before = page.locator("#seed-text").inner_text() if page.locator("#seed-text").count() else ""
    box = page.locator("img").first.bounding_box()
    started = time.perf_counter()
    page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
    page.wait_for_function(
        "(before) => { const t = document.querySelector('#seed-text'); "
        "return t && t.innerText !== before && !document.querySelector('#busy-indicator'); }",
        arg=before, timeout=120_000)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=5, help="warm clicks after the first")
    parser.add_argument("--bundle", default="")
    parser.add_argument("--sample", default=DEFAULT_SAMPLE, choices=SAMPLES)
    args = parser.parse_args()
    process, url = start_viewer(args.bundle, args.sample)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                                 args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            opened = time.perf_counter()
            page.goto(url)
            page.wait_for_function("(name) => document.querySelector('#volume-text')?.innerText.includes(name)",
                                   arg=args.sample, timeout=60_000)
            page.locator("img").first.wait_for(state="visible", timeout=60_000)
            first_view = time.perf_counter() - opened
            first = timed_click(page, 0.5, 0.5)
            warm = [timed_click(page, 0.5 + 0.004 * (step % 2 + 1), 0.5) for step in range(args.clicks)]
            browser.close()
    finally:
        process.terminate()
        process.wait(timeout=20)
    median = statistics.median(warm)
    print(f"sample {args.sample}; first view shown {first_view * 1000:.0f} ms after the page was asked for")
    print(f"first click: {first * 1000:7.0f} ms  (page opened, then clicked at once)")
    print(f"warm click:  {median * 1000:7.0f} ms  median of {args.clicks}")
    print(f"ratio first / warm: {first / median:.2f} (target <= 2)")


if __name__ == "__main__":
    main()
