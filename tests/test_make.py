"""`make docs` is safe: without Quarto it says so and changes nothing; with Quarto it runs nbdev from the project's .venv.

Each test runs the real Makefile in a scratch directory (never the repository: its venv target could reinstall .venv),
on a PATH built here: the few tools make needs, and shims that log every call to python, pip, sudo, curl or quarto."""
import os, shutil, subprocess, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(shutil.which('make') is None, reason='needs GNU make')

LOGGED = ('python', 'python3', 'pip', 'pip3', 'sudo', 'curl', 'dpkg', 'nbdev_docs', 'nbdev_install_quarto')
TOOLS = ('bash', 'sh', 'make', 'env', 'touch', 'cat', 'basename', 'dirname', 'rm', 'mkdir', 'test', 'id', 'git')

def _shim(path, log, body=''):
    path.write_text(f'#!/bin/bash\necho "$(basename "$0") $*" >> {log}\n{body}\n')
    path.chmod(0o755)

def _scratch(tmp_path):
    "A copy of the build inputs, a PATH with no quarto on it, and the log the shims write"
    work, bin_, log = tmp_path/'work', tmp_path/'bin', tmp_path/'calls.log'
    work.mkdir(); bin_.mkdir(); log.write_text('')
    for f in ('Makefile', 'setup.py', 'settings.ini', 'README.md'): shutil.copy(ROOT/f, work/f)
    for t in TOOLS:
        if (w := shutil.which(t)): (bin_/t).symlink_to(w)
    for t in LOGGED: _shim(bin_/t, log, 'exit 1')
    env = {k: v for k, v in os.environ.items() if k not in ('MAKEFLAGS', 'MFLAGS', 'MAKELEVEL')} | {'PATH': str(bin_)}
    assert shutil.which('quarto', path=env['PATH']) is None
    return work, bin_, log, env

def _snapshot(d):
    return {str(p.relative_to(d)): p.stat().st_mtime_ns for p in sorted(d.rglob('*'))}

def test_docs_without_quarto_says_so_and_changes_nothing(tmp_path):
    work, _, log, env = _scratch(tmp_path)
    before = _snapshot(work)
    r = subprocess.run(['make', 'docs'], cwd=work, env=env, capture_output=True, text=True, timeout=60)
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and 'Quarto' in lines[0] and 'https://quarto.org' in lines[0], r.stdout + r.stderr
    assert '.github/workflows/deploy.yaml' in lines[0], lines
    assert r.returncode != 0, 'the site was not built: make docs must fail (see the Makefile comment)'
    assert log.read_text() == '', f'make docs ran: {log.read_text()}'  # no venv, no pip, no sudo, no installer
    assert _snapshot(work) == before, 'make docs changed files'
    assert not (work/'.venv').exists() and not (work/'_docs').exists()

def test_docs_with_quarto_runs_nbdev_from_the_venv(tmp_path):
    work, bin_, log, env = _scratch(tmp_path)
    _shim(bin_/'quarto', log)
    venv = work/'.venv'/'bin'
    venv.mkdir(parents=True)
    # the venv's nbdev_docs records the PATH it runs with and which pip that PATH finds
    _shim(venv/'nbdev_docs', log, 'echo "PATH=$PATH" >> {0}; echo "pip=$(command -v pip)" >> {0}'.format(log))
    _shim(venv/'pip', log); _shim(venv/'python', log)
    stamp = work/'.venv'/'.optbook-installed'
    stamp.write_text('')
    old = time.time() - 3600
    for f in ('setup.py', 'settings.ini', 'README.md'): os.utime(work/f, (old, old))  # the venv is up to date
    readme = (work/'README.md').read_text()
    r = subprocess.run(['make', 'docs'], cwd=work, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    calls = log.read_text().splitlines()
    assert calls[0] == 'nbdev_docs ', calls  # nothing before it: no python3 -m venv, no pip install
    assert calls[1] == f'PATH={venv}:{bin_}', calls  # .venv/bin first, so nbdev's own `pip install` is the venv's
    assert calls[2] == f'pip={venv}/pip' and len(calls) == 3, calls
    assert (work/'README.md').read_text() == readme and (work/'README.md').stat().st_mtime > old + 60  # touched, kept
