# Two commands do everything on a fresh Debian machine:
#   make demo   set up, then run the main job (the simulation)
#   make test   set up, then run the test suite
# Set-up = a virtual environment in .venv with the package and its dependencies,
# plus Xvfb and the GL libraries PsychoPy needs (apt, when running as root).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.closedloop-installed
PSYCHOPY := psychopy==2026.2.5
# The tests run in this many worker processes (pytest-xdist), one per core of CI's two;
# TEST_WORKERS=0 runs them in this one process. Those that check wall-clock pacing (marked
# realtime) run afterwards on their own, where no other test competes for the cores.
TEST_WORKERS ?= 2

.PHONY: demo test lint setup system-deps clean

demo: setup
	$(VENV)/bin/closedloop demo

test: setup lint
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not realtime"
	$(PY) -m pytest -q -m realtime

# ruff (lint and format) and mypy, configured in pyproject.toml; also run by pre-commit
lint: setup
	$(VENV)/bin/ruff check closedloop tests benchmarks scripts setup.py
	$(VENV)/bin/ruff format --check closedloop tests benchmarks scripts setup.py
	$(VENV)/bin/mypy

setup: system-deps $(STAMP)

system-deps:
	@bash scripts/system-deps.sh

$(STAMP): pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "closedloop needs Python >= 3.11; set PYTHON=python3.11 (or newer)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[present,monitor,lsl,scale,pyramid,test]"
	# PsychoPy's own dependency list pulls ~1 GB and pins numpy < 2.4 (docs/methods.md, Installing):
	# install it alone; the [present] extra above brings what psychopy.visual needs.
	$(PY) -m pip install --quiet --no-deps $(PSYCHOPY)
	touch $(STAMP)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
