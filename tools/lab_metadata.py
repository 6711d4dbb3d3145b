"""Notebook metadata as JupyterLab writes it, so a notebook opens unmodified.

When JupyterLab opens a notebook and its kernel starts, it writes the kernel's `kernelspec` (with its display name) and
`language_info` into the notebook's metadata; if they differ from the file, the notebook opens marked as changed.
nbdev_clean keeps `language_info` (settings.ini `allowed_metadata_keys`) and sets the kernelspec's display name to its
name, so the course kernel is installed with `--display-name python3` (Makefile) and every notebook carries:

    python tools/lab_metadata.py          # write it into every notebook of nbs/
    python tools/lab_metadata.py --check  # fail if a notebook differs
"""
import json, sys
from pathlib import Path

KERNELSPEC = {'display_name': 'python3', 'language': 'python', 'name': 'python3'}

def language_info() -> dict:
    "What ipykernel reports to JupyterLab (its kernel_info reply), for the Python running this script"
    from ipykernel.ipkernel import IPythonKernel
    return dict(IPythonKernel.language_info)

def expected(meta:dict) -> dict:
    return {**meta, 'kernelspec': KERNELSPEC, 'language_info': language_info()}

def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    nbs = sorted((Path(__file__).parents[1] / 'nbs').glob('*.ipynb'))
    bad = []
    for p in nbs:
        text = p.read_text(encoding='utf-8')
        nb = json.loads(text)
        want = expected(nb.get('metadata', {}))
        if nb.get('metadata') == want: continue
        if '--check' in args: bad.append(p.name); continue
        nb['metadata'] = want
        p.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n', encoding='utf-8')
    if bad: print(f"notebook metadata differs from what JupyterLab writes: {', '.join(bad)}; run python tools/lab_metadata.py"); return 1
    return 0

if __name__ == '__main__': sys.exit(main())
