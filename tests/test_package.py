"The installed package: torch is its only runtime dependency, and `import optbook` pulls in no dev or plotting tool."
import subprocess, sys
from importlib.metadata import requires
from fresh_python import fresh_imports

def test_runtime_requirements_are_torch_only():
    runtime = [r for r in requires('optbook') if 'extra ==' not in r]
    assert [r.split('>')[0].split('=')[0].split('<')[0].strip() for r in runtime] == ['torch'], runtime
    dev = [r for r in requires('optbook') if 'extra == "dev"' in r]
    assert any(r.startswith('nbdev') for r in dev) and any(r.startswith('fastcore') for r in dev)

def test_import_pulls_no_dev_or_plotting_modules():
    mods = fresh_imports()['modules']  # a fresh interpreter's, after `import optbook`
    assert 'optbook.core' in mods  # the check sees modules at all
    out = ' '.join(m for m in ('fastcore', 'nbdev', 'matplotlib', 'ipywidgets', 'execnb') if m in mods)
    assert out == '', f"import optbook imported {out}"

def test_public_api_at_top_level():
    import optbook
    assert optbook.Optimizer is optbook.core.Optimizer and callable(optbook.default_device)

# --- the top-level API: `__all__` -------------------------------------------------------------------------------------
import re, types, zipfile, email, shutil
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent

def test_star_import_brings_exactly_all():
    import optbook
    ns = {}
    exec('from optbook import *', ns)
    assert sorted(k for k in ns if k != '__builtins__') == sorted(optbook.__all__)
    assert len(optbook.__all__) == len(set(optbook.__all__)), 'a name is listed twice'

def test_all_holds_no_submodule_underscore_or_instance_and_every_name_resolves():
    import optbook
    from optbook.core import Stepper
    for n in optbook.__all__:
        obj = getattr(optbook, n)  # resolves (an AttributeError names the missing one)
        assert not n.startswith('_'), n
        assert not isinstance(obj, types.ModuleType), f'{n} is a submodule'
        assert not isinstance(obj, Stepper), f'{n} is a stepper: steppers stay in their chapter module'
        assert isinstance(obj, (type, types.FunctionType)), f'{n} is a {type(obj).__name__}, not a class or function'

# the API the README and the book present, as its readers call it (not derived from the code under test)
PUBLIC = ('SGD RMSprop Adam AdamW RAdam SGDW RMSpropW decoupled param_groups ParamGroups OneCycle Warmup SchedLR '
          'sched_cos sched_lin combine_scheds fit_one_cycle lr_find Learner Callback Recorder ProgressCallback SchedulerCallback '
          'Optimizer Stepper stepper Hyper Interval default_device DataLoaders mnist1d_dls mlp variance_explorer').split()

def test_public_names_are_in_all_and_steppers_stay_in_their_modules():
    import optbook
    from optbook.core import Stepper
    assert set(PUBLIC) <= set(optbook.__all__), set(PUBLIC) - set(optbook.__all__)
    for mod, n in [('adam', 'ema_grad'), ('adam', 'adam_step'), ('momentum', 'heavy_ball'), ('core', 'descend'), ('rmsprop', 'rmsprop_step')]:
        assert isinstance(getattr(getattr(optbook, mod), n), Stepper) and n not in optbook.__all__, n
        assert getattr(optbook, n) is getattr(getattr(optbook, mod), n), f'optbook.{n} (used by existing code) must stay reachable'
    for n in ('EXPERIMENTS', 'WD_GRIDS', 'adam_steppers', 'core', 'adam', 'learner'): assert n not in optbook.__all__, n

def test_every_chapter_module_joins_the_top_level():
    "A module file in optbook/ that `__init__.py` does not import is a chapter missing from the public API"
    import optbook
    top = set(optbook.__all__)
    for f in sorted((ROOT/'optbook').glob('*.py')):
        if f.stem.startswith('_') or f.stem in ('experiments', 'distributed'): continue  # command lines (python -m, torchrun -m): their main/train stay out of the top level
        mod = getattr(optbook, f.stem, None)
        assert isinstance(mod, types.ModuleType), f'optbook/__init__.py does not import optbook.{f.stem}: add `from .{f.stem} import *`'
        public = [n for n in mod.__all__ if isinstance(getattr(mod, n), (type, types.FunctionType))]
        assert set(public) <= top, f'optbook.{f.stem} exports {sorted(set(public) - top)} but the top level lacks them (a name clash?)'

# --- the wheel: what `pip install` gets ----------------------------------------------------------------------------------
STATUSES = {1: 'Planning', 2: 'Pre-Alpha', 3: 'Alpha', 4: 'Beta', 5: 'Production/Stable', 6: 'Mature', 7: 'Inactive'}  # pypi.org/classifiers

@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    "Build the wheel from a copy of the build inputs, offline (the venv's setuptools: torch itself requires >=77.0.3)"
    src, out = tmp_path_factory.mktemp('src'), tmp_path_factory.mktemp('whl')
    for f in ('setup.py', 'settings.ini', 'pyproject.toml', 'MANIFEST.in', 'README.md', 'LICENSE', 'CHANGELOG.md'):
        shutil.copy(ROOT/f, src/f)
    shutil.copytree(ROOT/'optbook', src/'optbook', ignore=shutil.ignore_patterns('__pycache__'))
    r = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-v', '-w', str(out), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (whl,) = out.glob('optbook-*.whl')
    return whl, r.stdout + r.stderr

def test_wheel_ships_license_and_py_typed_without_license_warnings(wheel):
    whl, log = wheel
    names = zipfile.ZipFile(whl).namelist()
    assert 'optbook/py.typed' in names, names
    lic = [n for n in names if n.endswith('.dist-info/licenses/LICENSE')]
    assert lic, names
    assert 'Apache License' in (text := zipfile.ZipFile(whl).read(lic[0]).decode()) and 'Version 2.0, January 2004' in text
    for bad in ('License classifiers are deprecated', "no files found matching 'LICENSE'", 'SetuptoolsDeprecationWarning'):
        assert bad not in log, bad

def test_wheel_metadata(wheel):
    whl, _ = wheel
    zf = zipfile.ZipFile(whl)
    meta = email.message_from_bytes(zf.read(next(n for n in zf.namelist() if n.endswith('.dist-info/METADATA'))))
    from configparser import ConfigParser
    cfg = ConfigParser(delimiters=['=']); cfg.read(ROOT/'settings.ini'); cfg = cfg['DEFAULT']
    assert meta['License-Expression'] == 'Apache-2.0' and cfg['license'] == 'apache2'
    classifiers = meta.get_all('Classifier')
    status = int(cfg['status'])
    assert f'Development Status :: {status} - {STATUSES[status]}' in classifiers, classifiers
    assert [c for c in classifiers if c.startswith('Development Status')] == [f'Development Status :: {status} - {STATUSES[status]}']
    assert not [c for c in classifiers if c.startswith('License ::')], 'the SPDX expression replaces license classifiers'
    assert 'Typing :: Typed' in classifiers
    urls = dict(u.split(', ', 1) for u in meta.get_all('Project-URL'))
    assert urls['Documentation'] == 'https://optbook.github.io/optbook' and urls['Source'] == 'https://github.com/optbook/optbook'
    assert urls['Issues'] == 'https://github.com/optbook/optbook/issues'
    runtime = [r for r in meta.get_all('Requires-Dist') if 'extra ==' not in r]
    assert [re.split(r'[<>=!~;\[ ]', r)[0] for r in runtime] == ['torch'], runtime

def test_no_public_name_is_exported_by_two_chapters():
    "`from optbook import *` takes each chapter's `__all__`; a name two chapters export would silently shadow the earlier one (13c's Muon stepper once hid 03's `ema_momentum`)"
    import collections, importlib, re
    import optbook
    starred = re.findall(r'^from \.(\w+) import \*$', (Path(optbook.__file__)).read_text(), re.M)  # the chapters `import optbook` spills
    owners = collections.defaultdict(list)
    for name in starred:
        for n in getattr(importlib.import_module(f'optbook.{name}'), '__all__', ()): owners[n].append(name)
    assert not {n: ms for n, ms in owners.items() if len(ms) > 1}
