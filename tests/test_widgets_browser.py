"The variance explorer in a real browser: Voila serves it, headless Chromium (Debian's) moves a slider, the figure changes."
import json, os, socket, subprocess, sys, time
from contextlib import contextmanager
from pathlib import Path
import pytest

CHROMIUM = '/usr/bin/chromium'
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--no-first-run']
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing: apt-get install chromium")]

NOTEBOOK = {
    "cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
               "source": "from optbook.widgets import variance_explorer\nvariance_explorer(steps=400, n_max=1000)"}],
    "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
    "nbformat": 4, "nbformat_minor": 5}

def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

def wait_port(port, proc, timeout):
    "Wait until the server accepts connections (without requesting the page, which would start a kernel)"
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None: raise RuntimeError(f"voila exited with code {proc.returncode}")
        try:
            with socket.create_connection(('127.0.0.1', port), timeout=1): return
        except OSError: time.sleep(0.3)
    raise TimeoutError(f"voila did not listen on port {port} within {timeout}s")

@contextmanager
def voila_serving(folder, name, notebook):
    "Voila serving `notebook` (a dict) as `folder/name` on a free local port: yields its URL, stops the server afterwards"
    voila = Path(sys.executable).with_name('voila')
    if not voila.exists(): pytest.skip(f"voila is not installed next to {sys.executable}")
    (folder / name).write_text(json.dumps(notebook))
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(Path(__file__).parents[1]))
    log = open(folder / 'voila.log', 'w')
    proc = subprocess.Popen([str(voila), name, f'--port={port}', '--no-browser', '--Voila.ip=127.0.0.1',
                             '--VoilaConfiguration.show_tracebacks=True'], cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc, timeout=30)
        yield f'http://127.0.0.1:{port}/'
    finally:
        proc.terminate()
        try: proc.wait(10)
        except subprocess.TimeoutExpired: proc.kill()
        log.close()

@pytest.fixture
def voila_url(tmp_path):
    with voila_serving(tmp_path, 'explorer.ipynb', NOTEBOOK) as url: yield url

def test_slider_changes_the_figure(voila_url):
    os.environ.setdefault('PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD', '1')  # never download a browser: Debian's chromium is used
    sync_playwright = pytest.importorskip('playwright.sync_api').sync_playwright
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={'width': 1200, 'height': 900})
            page.goto(voila_url, timeout=40_000)
            img = page.locator('.widget-image').first
            img.wait_for(state='visible', timeout=40_000)
            page.wait_for_function("() => { const i = document.querySelector('.widget-image'); return i && i.naturalWidth > 0 }", timeout=20_000)
            src0, shot0 = img.get_attribute('src'), img.screenshot()
            info = page.locator('.widget-html').first
            assert 't = 10' in info.inner_text()
            # the step slider is the one whose readout shows 10; move it with the keyboard, as a user would
            handle = page.locator('.widget-slider', has=page.locator('.widget-readout', has_text='10')).locator('.noUi-handle').first
            handle.focus()
            for _ in range(8): handle.press('ArrowRight')
            page.wait_for_function("s => document.querySelector('.widget-image').src !== s", arg=src0, timeout=20_000)
            page.wait_for_function("() => !document.querySelector('.widget-html').innerText.includes('t = 10:')", timeout=20_000)
            img.evaluate("i => i.decode()")
            assert img.screenshot() != shot0
            assert 't = 10:' not in info.inner_text()
        finally:
            browser.close()
