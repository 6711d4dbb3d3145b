"The trajectory and schedule explorers in a real browser: Voila serves them, headless Chromium (Debian's) moves a slider, the figure changes."
import os
from pathlib import Path
import pytest
from test_widgets_browser import CHROMIUM, CHROMIUM_ARGS, voila_serving  # the variance explorer's plumbing

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing: apt-get install chromium")]

NOTEBOOK = {
    "cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": src} for src in
              ("from optbook.explorers import trajectory_explorer, schedule_explorer", "trajectory_explorer()", "schedule_explorer(100)")],
    "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
    "nbformat": 4, "nbformat_minor": 5}

@pytest.fixture(scope='module')
def voila_url(tmp_path_factory):
    with voila_serving(tmp_path_factory.mktemp('explorers'), 'explorers.ipynb', NOTEBOOK) as url: yield url

@pytest.fixture(scope='module')
def page(voila_url):
    "One page for both tests (a page load runs the notebook in a new kernel: seconds); each test moves its own explorer's slider"
    os.environ.setdefault('PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD', '1')  # never download a browser: Debian's chromium is used
    sync_playwright = pytest.importorskip('playwright.sync_api').sync_playwright
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={'width': 1300, 'height': 1400})
            page.goto(voila_url, timeout=40_000)
            yield page
        finally:
            browser.close()

def move_slider(page, box, description, presses):
    "Press ArrowRight `presses` times on the first slider of `box` labelled `description`, as a user would; return its image before"
    img = page.locator(f'{box} .widget-image').first
    img.wait_for(state='visible', timeout=60_000)
    page.wait_for_function(f"() => {{ const i = document.querySelector('{box} .widget-image'); return i && i.naturalWidth > 0 }}", timeout=20_000)
    src0, shot0 = img.get_attribute('src'), img.screenshot()
    slider = page.locator(f'{box} .widget-slider', has=page.locator('label', has_text=description)).first
    handle = slider.locator('.noUi-handle').first
    handle.focus()
    for _ in range(presses): handle.press('ArrowRight')
    page.wait_for_function(f"s => document.querySelector('{box} .widget-image').src !== s", arg=src0, timeout=20_000)
    img.evaluate("i => i.decode()")
    return img, shot0

def test_trajectory_explorer_redraws(page):
    box = '.optbook-trajectory-explorer'
    info = page.locator(f'{box} .widget-html').first
    info.wait_for(state='visible', timeout=60_000)
    text0 = info.inner_text()
    assert 'SGD' in text0 and 'momentum' in text0 and 'Adam' in text0
    img, shot0 = move_slider(page, box, 'lr', 4)  # SGD's learning rate, the first lr slider
    assert img.screenshot() != shot0
    page.wait_for_function(f"t => document.querySelector('{box} .widget-html').innerText !== t", arg=text0, timeout=20_000)
    sgd_line = lambda t: [l for l in t.splitlines() if l.startswith('SGD')][0]
    assert sgd_line(info.inner_text()) != sgd_line(text0)  # SGD's loss changed with its rate

def test_schedule_explorer_redraws(page):
    box = '.optbook-schedule-explorer'
    info = page.locator(f'{box} .widget-html').first
    info.wait_for(state='visible', timeout=60_000)
    assert 'up to 1 at step 29' in info.inner_text()
    img, shot0 = move_slider(page, box, 'pct_start', 2)  # 0.3 -> 0.4
    assert img.screenshot() != shot0
    page.wait_for_function(f"() => document.querySelector('{box} .widget-html').innerText.includes('up to 1 at step 39')", timeout=20_000)
