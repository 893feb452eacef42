# The two commands of the README: `make demo` and `make test`. Each sets itself up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# bash with pipefail: a failing pip still fails the recipe when its output is filtered through grep.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

.PHONY: demo demo-inbox test lint typecheck docs bench bench-paired bench-proxy bench-agentdojo install clean notebooks

# The first run installs for a minute or two: say so before each phase, and let pip show what it fetches.
$(STAMP): pyproject.toml
	@echo "==> [1/3] creating the virtual environment $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	@echo "==> [2/3] upgrading pip inside $(VENV)"
	$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "==> [3/3] installing mcp-guard and its dev extra (LangChain, Agents SDK, Redis, test tools): 1-3 minutes"
	$(BIN)/python -m pip install -e '.[dev]' | { grep -E --line-buffered '^(Collecting|Installing|Successfully)' || true; }
	touch $(STAMP)
	@echo "==> installed; next runs skip this until pyproject.toml changes"

install: $(STAMP)

demo: $(STAMP)
	@echo "==> running examples/demo.py (scripted models unless OPENAI_API_KEY is set)"
	$(BIN)/python examples/demo.py

# An agent whose withdrawal waits in the approval inbox; open the printed address to decide.
demo-inbox: $(STAMP)
	$(BIN)/python examples/inbox_demo.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples docs
	$(BIN)/ruff format --check src tests benchmarks examples docs

# The library, and the example helpers that are plain modules (the notebook sources await at top level).
typecheck: $(STAMP)
	$(BIN)/mypy --strict src
	$(BIN)/mypy --strict examples/build_notebooks.py examples/_scripted.py docs/hooks.py docs/griffe_roles.py

# The documentation site (mkdocs.yml): the policy and CLI reference are generated from the code as it builds, and
# --strict makes any warning (a broken link, a docstring mkdocstrings cannot read) fail. Output: build/docs.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

test: lint typecheck docs
	$(BIN)/python -m pytest -q

# Execute the notebook sources (examples/0*.py, jupytext percent format) and write the .ipynb files with outputs.
notebooks: $(STAMP)
	$(BIN)/python examples/build_notebooks.py

# The quick set: rough figures in a minute or two (drop --quick for the full runs; benchmarks/*.py --help).
bench: $(STAMP)
	$(BIN)/python benchmarks/decision.py --quick
	$(BIN)/python benchmarks/runtime.py --quick
	$(BIN)/python benchmarks/guard_overhead.py --quick
	$(BIN)/python benchmarks/langchain_overhead.py --quick
	$(BIN)/python benchmarks/agents_overhead.py --quick
	$(BIN)/python benchmarks/pipeline_cost.py --quick $(if $(AGT_PYTHON),--agt-python $(AGT_PYTHON))
	$(BIN)/python benchmarks/proxy_overhead.py --calls 100
	$(BIN)/python benchmarks/cluster.py --seconds 1

# The proxy beside pass-through peers in one run (PyPI and npm mcp-proxy, bonanza-mcp-guard), each installed on
# first use under .bench-venvs/ (pinned, from PyPI / npm). ARGS: e.g. ARGS=--quick, ARGS="--calls 1000".
bench-proxy: $(STAMP)
	$(BIN)/python benchmarks/proxy_overhead.py --peers $(ARGS)

# Before vs after in one run: make bench-paired BEFORE=880776b [AFTER=/path/to/worktree] [ROUNDS=3]
bench-paired: $(STAMP)
	$(BIN)/python benchmarks/paired.py --before $(BEFORE) $(if $(AFTER),--after $(AFTER)) --rounds $(or $(ROUNDS),3) --quick

# The published security score: AgentDojo's tasks replayed through the example policies (benchmarks/agentdojo_score.py).
# agentdojo brings many packages (model SDKs), so it gets its own venv, never .venv. ARGS: e.g. ARGS=--markdown.
BENCH_VENV := .bench-venvs/agentdojo
$(BENCH_VENV)/.installed: pyproject.toml
	@echo "==> creating $(BENCH_VENV): mcp-guard (extras yaml, secrets) and agentdojo 0.1.35 (1-2 minutes, once)"
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install -e '.[yaml,secrets]' agentdojo==0.1.35 pytest pytest-asyncio \
		| { grep -E --line-buffered '^(Successfully)' || true; }
	touch $@

bench-agentdojo: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python benchmarks/agentdojo_score.py $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
