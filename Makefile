# Partitur: the two commands are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_WORKERS ?= auto

.PHONY: run test lint bench bench-quick clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

.venv: $(VENV)/.installed

run: .venv
	$(BIN)/python -m compileall -q engine server > /dev/null  # a quicker start
	$(BIN)/partitur serve --config server-config.yaml

test: .venv
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile

lint: .venv
	$(BIN)/ruff check engine server tests benchmarks
	$(BIN)/mypy

bench: .venv
	$(BIN)/python -m benchmarks.run --backend sqlite
	$(BIN)/python -m benchmarks.run --backend postgres

bench-quick: .venv
	$(BIN)/python -m benchmarks.run --backend sqlite --quick

clean:
	rm -rf $(VENV) .partitur .pytest_cache .mypy_cache .ruff_cache
