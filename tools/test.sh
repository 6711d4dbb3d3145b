#!/usr/bin/env bash
# The test command's body (run by `make test` inside .venv): fails on the first broken check.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MPLBACKEND=Agg PYTHONHASHSEED=0

snapshot() { find "$@" -type f \( -name '*.py' -o -name '*.ipynb' \) -not -path '*/.ipynb_checkpoints/*' -not -path '*/__pycache__/*' -print0 | sort -z | xargs -0 md5sum; }

echo "== 1/6 notebooks and optbook/ in sync (nbdev_export leaves no diff)"
before=$(snapshot optbook)
nbdev_export
after=$(snapshot optbook)
if [ "$before" != "$after" ]; then diff <(echo "$before") <(echo "$after") || true
  echo "nbdev_export changed optbook/: export the notebooks and commit the result"; exit 1; fi

echo "== 2/6 notebooks clean (nbdev_clean leaves no diff)"
before=$(snapshot nbs)
nbdev_clean
after=$(snapshot nbs)
if [ "$before" != "$after" ]; then diff <(echo "$before") <(echo "$after") || true
  echo "nbdev_clean changed notebooks: run nbdev_clean and commit"; exit 1; fi

echo "== 3/6 README.md rendered from nbs/index.ipynb"
python tools/readme.py --check

echo "== 4/6 docs: nbdev's notebook processing on every notebook (Quarto renders in CI)"
python tools/check_docs.py

echo "== 5/6 nbdev_test (tst_flags: notest slow)"
nbdev_test --n_workers 2 --timing

echo "== 6/6 pytest tests/ (2 workers, each test file whole in one: module fixtures run once)"
# pytest-xdist: the tests are single-threaded (OMP_NUM_THREADS=1), so 2 workers keep 2 cores busy, as nbdev_test's 2 above;
# --dist loadfile keeps a file's tests in one worker, in order (its module-scoped fixtures, such as test_distributed's one
# 2-process job, run once, and a file's last test may read what its earlier ones recorded)
python -m pytest tests -q -p no:cacheprovider -n 2 --dist loadfile
