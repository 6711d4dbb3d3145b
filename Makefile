# optbook: the two commands of the README are `make course` and `make test`.
# Each creates the virtual environment .venv when it is missing and is safe to run again.
SHELL := /bin/bash
PY    := .venv/bin/python
VENV_STAMP := .venv/.optbook-installed

.PHONY: course test slow docs venv browser-deps clean-venv

venv: $(VENV_STAMP)

# torch and torchvision are pinned here (the versions the book is tested with); the package itself needs torch only
$(VENV_STAMP): setup.py settings.ini
	@test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[dev]"
	# timm is a test-time reference only (LARS, LAMB, adaptive clipping): --no-deps so it never moves the torch pin
	$(PY) -m pip install -q --no-deps timm==1.0.31
	# schedulefree is the test-time reference of chapter 13d (AdamWScheduleFree, SGDScheduleFree), --no-deps likewise
	$(PY) -m pip install -q --no-deps schedulefree==1.4.1
	$(PY) -m pip install -q pyyaml huggingface_hub safetensors torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip check
	@if git rev-parse --git-dir >/dev/null 2>&1; then .venv/bin/nbdev_install_hooks >/dev/null; fi
	# JupyterLab writes the kernel's display name into a notebook it opens, and nbdev_clean sets it to the kernel's name:
	# the same word both ways, so the notebooks open unmodified (tools/lab_metadata.py writes the rest)
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name python3 >/dev/null
	@touch $(VENV_STAMP)

## The course: JupyterLab on nbs/ with the project's kernel (ipywidgets included)
course: venv
	cd nbs && ../.venv/bin/jupyter lab --notebook-dir=. $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

## Every test: export/clean in sync, docs processing, nbdev_test (not slow), pytest
test: venv browser-deps
	PATH="$(CURDIR)/.venv/bin:$$PATH" bash tools/test.sh

## The real training runs too (about 7 minutes on 2 CPU cores), the property-based test's long profile (10x the examples, fresh each run),
## and the tests marked slow (the long versions of checks whose short versions `make test` runs)
slow: venv
	OMP_NUM_THREADS=1 MPLBACKEND=Agg .venv/bin/nbdev_test --flags slow --n_workers 2 --timing  # one thread per notebook: 2 threads each oversubscribe 2 cores
	HYPOTHESIS_PROFILE=slow OMP_NUM_THREADS=1 PYTHONHASHSEED=0 .venv/bin/python -m pytest tests/test_properties.py -q -p no:cacheprovider
	OMP_NUM_THREADS=1 MPLBACKEND=Agg PYTHONHASHSEED=0 .venv/bin/python -m pytest tests -q -p no:cacheprovider -m slow

## The docs site (needs Quarto: https://quarto.org); CI builds it in .github/workflows/deploy.yaml
# Quarto is checked first, before the venv: without it nbdev_docs would run nbdev's Quarto installer (sudo) and then a
# bare `pip install -e .[dev]` into whatever python is first on PATH. So without Quarto: one line, nothing changed, and a
# failure (non-zero exit), because the site was not built and `make docs && <publish or open _docs>` must stop there.
# With Quarto: nbdev_docs from .venv with .venv/bin first on PATH, so any pip nbdev calls is the venv's. README.md is
# rendered by tools/readme.py (not Quarto): touching it keeps nbdev_docs's out-of-date check from re-rendering it.
docs:
	@command -v quarto >/dev/null 2>&1 || { echo "make docs needs Quarto (https://quarto.org) on PATH; nothing was done (the site is built by .github/workflows/deploy.yaml)"; exit 1; }
	@$(MAKE) --no-print-directory venv
	touch -c README.md && PATH="$(CURDIR)/.venv/bin:$$PATH" .venv/bin/nbdev_docs

# the widget's browser test drives Debian's chromium; install it where we may (root with apt), never a downloaded browser
browser-deps:
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "could not install chromium: the browser test will be skipped"; fi

clean-venv:
	rm -rf .venv
