# The two commands of the README: `make demo` and `make test`. Each sets itself up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-inbox test lint typecheck bench install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

# An agent whose withdrawal waits in the approval inbox; open the printed address to decide.
demo-inbox: $(STAMP)
	$(BIN)/python examples/inbox_demo.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy --strict src

test: lint typecheck
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/decision.py
	$(BIN)/python benchmarks/runtime.py
	$(BIN)/python benchmarks/guard_overhead.py
	$(BIN)/python benchmarks/langchain_overhead.py
	$(BIN)/python benchmarks/agents_overhead.py
	$(BIN)/python benchmarks/proxy_overhead.py
	$(BIN)/python benchmarks/cluster.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
