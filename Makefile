# micromine: the two commands a fresh machine needs are `make devnet` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEVNET_ARGS ?= --agents 4 --tx-rate 50 --duration 30
PYTEST_ARGS ?= --durations=25
TEST_WORKERS ?= 2
PURE := micromine.protocol micromine.common micromine.ledger_node micromine.device_agent

SEEDS ?= 100000
SIM_START ?= 0
FUZZ_SECONDS ?= 60
FUZZ_EXAMPLES ?= 2000

.PHONY: help devnet test bench lint format typecheck imports sim fuzz mosquitto clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 12

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

devnet: $(STAMP)  ## run a local cluster (broker, 4 ledger nodes, 4 agents, load); DEVNET_ARGS to change it
	$(BIN)/micromine devnet $(DEVNET_ARGS)

# The tests marked `serial` run alone first (they assert on CPU use, or have failed when a
# loaded machine ran them beside others); the rest run on TEST_WORKERS pytest-xdist workers
# (0: in one process), a test file per worker at a time, the longest files first
# (tests/conftest.py).
# Exit 5 (no test selected) is fine for one part, not for both.
test: $(STAMP) mosquitto  ## run the whole test suite (unit, property, real processes)
	serial=0; parallel=0; \
	$(BIN)/pytest -m serial $(PYTEST_ARGS) || serial=$$?; \
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -m 'not serial' $(PYTEST_ARGS) || parallel=$$?; \
	case "$$serial,$$parallel" in 0,0 | 5,0 | 0,5) exit 0;; 5,5) exit 5;; *) exit 1;; esac

BENCH_STAMP := $(VENV)/.bench-stamp
BENCH_ARGS ?=

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) mosquitto  ## cluster benchmark (about 10 min): JSON and PNGs in benchmarks/results; BENCH_ARGS to change it
	$(BIN)/python benchmarks/cluster_bench.py $(BENCH_ARGS)

sim: $(STAMP)  ## long consensus simulation: SEEDS seeds (default 100000) from SIM_START (default 0), all fault scenarios
	$(BIN)/python -m micromine.ledger_node.sim --seeds $(SEEDS) --start $(SIM_START) --byzantine --jobs 2

fuzz: $(STAMP)  ## long fuzzing: hypothesis fuzz tests FUZZ_EXAMPLES examples each, atheris FUZZ_SECONDS per harness
	MICROMINE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q -o timeout=0 tests/test_fuzz_*.py -k 'not atheris'
	$(BIN)/python tests/fuzz/run.py --seconds $(FUZZ_SECONDS)

lint: $(STAMP) typecheck imports  ## ruff (lint and format check), mypy on the pure packages, import contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# import-linter checks the contracts in pyproject.toml.  It reads the packages from the
# file system and puts the working directory first on sys.path, so it runs in a tree that
# spells out the package-dir mapping with real folders (hard links), without site's
# editable finder (python -S) and with the venv's packages added by hand.
SITE_PACKAGES = $(firstword $(wildcard $(VENV)/lib/python3*/site-packages))
imports: $(STAMP)  ## the import contracts (import-linter): layers point downward, pure cores import no I/O
	@rm -rf build/imports && mkdir -p build/imports/micromine
	@cp -rl micromine/. build/imports/micromine/
	@for d in protocol common broker device_agent ledger_node; do cp -rl $$d build/imports/micromine/$$d; done
	cd build/imports && ../../$(BIN)/python -S -c 'import sys; sys.path[:0] = ["../../$(SITE_PACKAGES)"]; \
		from importlinter.cli import lint_imports_command; \
		sys.argv = ["lint-imports", "../../pyproject.toml", "--no-cache"]; lint_imports_command()'

format: $(STAMP)  ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# mypy cannot follow setuptools' editable-install finder, so it reads the packages through
# a tree of links that spells out the package-dir mapping of pyproject.toml.
typecheck: $(STAMP)  ## mypy --strict on protocol/, ledger_node/ and device_agent/
	@rm -rf build/typecheck && mkdir -p build/typecheck/micromine
	@for d in protocol common broker device_agent ledger_node; do ln -s ../../../$$d build/typecheck/micromine/$$d; done
	@for f in micromine/*.py; do ln -s ../../../$$f build/typecheck/micromine/$$(basename $$f); done
	MYPYPATH=build/typecheck $(BIN)/mypy $(addprefix -p ,$(PURE))

# The integration tests start a real Mosquitto (Debian's package) on a free port.
mosquitto:
	@if { command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ]; } && command -v mosquitto_sub >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mosquitto mosquitto-clients; \
	else \
		echo "The tests need Mosquitto: sudo apt-get install mosquitto mosquitto-clients" >&2; exit 1; \
	fi

clean:  ## remove the virtualenv and caches
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache .hypothesis
