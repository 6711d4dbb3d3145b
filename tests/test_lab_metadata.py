"Notebooks open unmodified in JupyterLab: their metadata is what JupyterLab writes when it opens them with the course kernel."
import json, os, socket, subprocess, sys, time, uuid
from pathlib import Path
import pytest

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / 'tools'))
import lab_metadata


def test_every_notebook_carries_the_metadata_jupyterlab_writes():
    pytest.importorskip('ipykernel')
    bad = [p.name for p in sorted((ROOT / 'nbs').glob('*.ipynb'))
           if {k: v for k, v in json.loads(p.read_text())['metadata'].items() if k in ('kernelspec', 'language_info')}
           != {'kernelspec': lab_metadata.KERNELSPEC, 'language_info': {**lab_metadata.language_info(), 'version': json.loads(p.read_text())['metadata'].get('language_info', {}).get('version')}}]
    assert not bad, f"run `python tools/lab_metadata.py` (then nbdev_clean): {bad}"


def test_nbdev_clean_keeps_it():
    "settings.ini lets nbdev_clean (and its Jupyter save hook) keep language_info, and its display name rule is a no-op"
    from nbdev.clean import clean_nb
    nb = json.loads((ROOT / 'nbs' / '01b_models.ipynb').read_text())
    before = json.dumps(nb['metadata'], sort_keys=True)
    clean_nb(nb, allowed_metadata_keys=['language_info'])
    assert json.dumps(nb['metadata'], sort_keys=True) == before
    assert 'language_info' in (ROOT / 'settings.ini').read_text().split('allowed_metadata_keys =')[1].splitlines()[0]


CHROMIUM = '/usr/bin/chromium'

@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing")
def test_jupyterlab_opens_a_notebook_unmodified(tmp_path):
    "Open a chapter in JupyterLab, let its kernel start: the tab is not marked as changed"
    os.environ.setdefault('PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD', '1')
    sync_playwright = pytest.importorskip('playwright.sync_api').sync_playwright
    lab = Path(sys.executable).with_name('jupyter')
    spec = json.loads(subprocess.run([str(lab), 'kernelspec', 'list', '--json'], capture_output=True, text=True, check=True).stdout)
    if spec['kernelspecs'].get('python3', {}).get('spec', {}).get('display_name') != 'python3':
        pytest.skip('the python3 kernel has another display name: install it as the Makefile does')
    nb = json.loads((ROOT / 'nbs' / '01b_models.ipynb').read_text())
    if nb['metadata']['language_info']['version'] != sys.version.split()[0]:
        pytest.skip('the notebooks were written for another Python version')
    (tmp_path / 'ch.ipynb').write_text((ROOT / 'nbs' / '01b_models.ipynb').read_text())
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    token = uuid.uuid4().hex
    proc = subprocess.Popen([str(lab), 'lab', '--no-browser', '--ip=127.0.0.1', f'--port={port}', f'--IdentityProvider.token={token}',
                             '--allow-root', f'--notebook-dir={tmp_path}'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        for _ in range(120):
            try: socket.create_connection(('127.0.0.1', port), timeout=1).close(); break
            except OSError: time.sleep(0.5)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=['--headless', '--no-sandbox', '--disable-gpu'], headless=True)
            try:
                page = browser.new_page(viewport={'width': 1400, 'height': 900})
                page.goto(f'http://127.0.0.1:{port}/lab/tree/ch.ipynb?reset&token={token}', timeout=90_000)
                page.wait_for_selector('.jp-Notebook', timeout=90_000)
                status = "() => { const e = document.querySelector('.jp-Notebook-ExecutionIndicator'); return e && e.getAttribute('data-status') }"
                for _ in range(180):
                    if page.evaluate(status) == 'idle': break
                    time.sleep(0.5)
                else: pytest.fail('the kernel did not start')
                time.sleep(3)  # the kernel's info has arrived; give the metadata update time to land
                dirty = "() => Array.from(document.querySelectorAll('.lm-TabBar-tab.jp-mod-dirty')).map(e => e.textContent)"
                assert page.evaluate(dirty) == []
                # the negative control: a change marks it
                page.click('.jp-CodeCell .jp-InputArea-editor >> nth=1'); page.keyboard.type('# x')
                time.sleep(1)
                assert page.evaluate(dirty) == ['ch.ipynb']
            finally: browser.close()
    finally:
        os.killpg(proc.pid, 15); proc.wait(30)
