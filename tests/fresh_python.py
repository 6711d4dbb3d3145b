"""What a fresh interpreter sees when it imports optbook: one subprocess (a torch import, seconds) for the import checks of
several test files (test_package, test_experiments, test_radam, test_weight_decay), run once per pytest process.
`import optbook` imports every chapter module (optbook/__init__.py), so the modules loaded after importing optbook and any
chapter module are the ones `import optbook.<chapter>` alone loads: each file's check reads the same set as before."""
import functools, json, subprocess, sys

PROBE = r'''
import json, sys
import optbook, optbook.adam, optbook.weight_decay, optbook.lr_finder, optbook.radam, optbook.schedules, optbook.widgets
out = dict(modules=sorted(sys.modules))
sys.modules['ipywidgets'] = None  # as if it were not installed (the modules above show it was not imported)
try: optbook.variance_explorer(); out['without_ipywidgets'] = None
except ImportError as e: out['without_ipywidgets'] = str(e)
del sys.modules['ipywidgets']
import optbook.experiments as e  # last: the book's training runs may load plotting modules
out['experiments'] = sorted(e.EXPERIMENTS)
print(json.dumps(out))
'''

@functools.cache
def fresh_imports() -> dict:
    """`modules`: sys.modules after importing optbook and its chapter modules; `without_ipywidgets`: the ImportError's message
    of `optbook.variance_explorer()` when ipywidgets is missing (None if none was raised); `experiments`: the names registered
    once `optbook.experiments` is imported"""
    r = subprocess.run([sys.executable, '-c', PROBE], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])
