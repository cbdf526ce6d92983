# make demo | make test (lint + pytest) | make lint | make report | make dag | make rulegraph | make clean-demo | make slurm-up | make demo-slurm
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# Config used to draw the DAG pictures (the demo's by default).
CONFIGFILE ?= config/demo.yaml
# Products to draw the pictures for (default: everything, rule all).
TARGET ?=
# Where `make report` writes the Snakemake report of CONFIGFILE's run.
REPORT ?= $(if $(filter config/demo.yaml,$(CONFIGFILE)),demo/report.html,report.html)

.PHONY: venv demo demo-raw lint test report dag rulegraph clean-demo slurm-up slurm-down slurm-status demo-slurm

venv: $(STAMP)

# Reinstalled only when pyproject.toml changes.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || { echo "+ python3 -m venv $(VENV)"; python3 -m venv $(VENV); }
	$(BIN)/python -m pip install -e '.[test]'
	@touch $@

# Static checks: ruff (config in pyproject.toml), snakefmt and snakemake --lint.
lint: venv
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/snakefmt --check Snakefile rules
	@mkdir -p .lint/raw
	$(BIN)/snakemake --lint --config raw_dir=.lint/raw results_dir=.lint/results

test: lint
	$(BIN)/python -m pytest -q --durations=25 tests $(PYTEST_ARGS)

# Simulated raw data for the demo, made once.
demo-raw: venv
	@if [ -z "$$(ls -A demo/raw 2>/dev/null)" ]; then \
	  set -x; \
	  $(BIN)/contimg simulate --out demo/raw --start 2025-06-16T03:45:00 --dec 30.5 --n-obs 3 --n-ants 32 --max-radius 600 --n-chan 8 --n-int 6 --seed 1; \
	else echo "demo/raw already has data (make clean-demo to start again)"; fi

demo: demo-raw
	$(BIN)/snakemake --profile profiles/default --configfile config/demo.yaml
	$(MAKE) --no-print-directory report CONFIGFILE=config/demo.yaml
	$(BIN)/contimg status --config config/demo.yaml || [ $$? -eq 1 ]  # 1: an alert (shown), 2: an error

# The HTML report of what exists (rule summary, then snakemake --report);
# works on a partial run too. Open $(REPORT) in a browser.
report: venv
	$(BIN)/snakemake summary --forcerun summary --profile profiles/default --configfile $(CONFIGFILE)
	$(BIN)/snakemake summary --report $(REPORT) --configfile $(CONFIGFILE)
	@echo "wrote $(REPORT)"

# Pictures of the workflow: every rule once (rulegraph) or every job (dag),
# of everything or of TARGET (e.g. make dag TARGET=demo/results/ms/<group>.ms).
DAG_DEPS := venv $(if $(filter config/demo.yaml,$(CONFIGFILE)),demo-raw)

rulegraph dag: $(DAG_DEPS)
	@command -v dot >/dev/null || { echo "graphviz 'dot' not found (apt-get install graphviz)" >&2; exit 1; }
	$(BIN)/snakemake $(TARGET) --$@ --configfile $(CONFIGFILE) | dot -Tsvg > $@.svg
	@echo "wrote $@.svg"

# A single-node Slurm on this machine (root; Debian packages named by the
# script), and the demo run through it with profiles/slurm-test.
slurm-up:
	cluster/slurm.sh start
slurm-down:
	cluster/slurm.sh stop
slurm-status:
	cluster/slurm.sh status

demo-slurm: demo-raw slurm-up
	$(BIN)/snakemake --profile profiles/slurm-test --configfile config/demo.yaml

clean-demo:
	rm -rf demo dag.svg rulegraph.svg
