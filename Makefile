# The two commands of the README: `make demo` and `make test`. Both build the virtual
# environment from this repository's own files first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint pytest bench bench-serving bench-monitoring bench-drift clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch comes from the CPU wheel pinned here; a looser spec would pull a CUDA build.
	$(PY) -m pip install --quiet -e ".[all,dev]" "torch==2.13.0"
	# An editable install writes no bytecode, and PYTHONDONTWRITEBYTECODE=1 (CI) stops Python
	# from caching it: compile once, or every `shipyard` command compiles the sources again.
	$(PY) -m compileall -q src
	# The dashboard's browser test drives Debian's Chromium (no browser download needed).
	command -v chromium >/dev/null || ! command -v apt-get >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq chromium >/dev/null)
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/shipyard demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

pytest: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

test: lint pytest

bench: $(STAMP)
	$(PY) bench/push_pull.py

bench-serving: $(STAMP)
	$(PY) bench/serving/run.py

bench-drift: $(STAMP)
	$(PY) bench/drift/run.py

bench-monitoring: $(STAMP)
	$(PY) bench/monitoring/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
