# `make demo` and `make test` each build .venv from pyproject.toml on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench clean services-start services-stop

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

demo: $(STAMP)
	$(BIN)/python -m examples.demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The tests that need Redis or PostgreSQL find them through TRIO_LANES_TEST_* variables;
# unless they are set already (.ci/run), the servers are started for this run and stopped
# after it (scripts/services.sh; without the binaries those tests skip, with a hint).
pytest: $(STAMP)
	@if [ -n "$${TRIO_LANES_TEST_REDIS_URL:-}" ]; then $(BIN)/pytest -q; \
	else scripts/services.sh run $(BIN)/pytest -q; fi

# Servers kept running between test runs: `eval "$$(scripts/services.sh env)"` to use them.
services-start:
	scripts/services.sh start

services-stop:
	scripts/services.sh stop

test: lint typecheck pytest

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.lanes
	$(BIN)/python -m bench.batcher
	$(BIN)/python -m bench.pool
	$(BIN)/python -m bench.scheduler
	$(BIN)/python -m bench.bus
	$(BIN)/python -m bench.supervisors
	scripts/services.sh run $(BIN)/python -m bench.brokers

clean:
	rm -rf $(VENV)
