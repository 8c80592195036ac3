# vgg-repro: every target that needs Python runs it from .venv, created from
# requirements.txt on first use and refreshed whenever requirements.txt changes.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements.stamp
REPORTS := reports

.DEFAULT_GOAL := help
DATA ?= data/synthetic
.PHONY: help venv test bench data table1 table2 table3 params clean-venv

help: ## list the targets
	@echo "vgg-repro make targets:"
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z0-9-]+):.*## (.*)/  make \1\t\2/' | expand -t 24
	@echo "variables: PYTHON (the interpreter that creates .venv, default python3)"

$(STAMP): requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
		{ echo "error: $(PYTHON) is older than Python 3.10; run make PYTHON=python3.11 (or newer)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

venv: $(STAMP) ## create or refresh .venv from requirements.txt

test: $(STAMP) ## run the whole test suite
	$(PY) -m pytest

bench: $(STAMP) ## run the benchmarks; prints throughput ratios against references
	$(PY) -m pytest tests/benchmarks --benchmark-enable --benchmark-only --benchmark-columns=mean,stddev,rounds

data: $(STAMP) ## generate the embedded synthetic dataset into data/synthetic (skipped when present)
	$(PY) -m vgg data synth --out data/synthetic

table1: $(STAMP) ## write reports/table1.md (the configurations, from vgg/configs.py)
	$(PY) -m vgg report table1 --out-dir $(REPORTS)

table2: $(STAMP) ## write reports/table2.md (parameters and MACs per configuration)
	$(PY) -m vgg report table2 --out-dir $(REPORTS)

params: $(STAMP) ## print the Table 2 figures
	$(PY) -m vgg params

table3: ## (coming) train and evaluate Table 3 on the embedded synthetic dataset
	@echo "make table3: the experiment runner is not built yet; available now: make table1 table2 params test" >&2
	@exit 2

clean-venv: ## remove .venv
	rm -rf $(VENV)
