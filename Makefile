# vgg-repro: every target that needs Python runs it from .venv, created from
# requirements.txt on first use and refreshed whenever requirements.txt changes.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements.stamp
REPORTS := reports

.DEFAULT_GOAL := help
PROFILE ?= smoke
DATA ?=
GPUS ?= 0
LAUNCH ?= local
RUNS ?= runs
SLURM_ARGS ?=
SEEDS ?= 1
PRECISION ?=
JOBS ?=
# the experiments: one per file of experiments/ but the run catalogue, the profiles and the published weights (vgg.suite.plan.TABLES)
EXPERIMENT_NAMES := $(shell ls experiments | sed -n 's/\.toml$$//p' | grep -vxE 'runs|profiles|pretrained' | sort -V)
RESULT_TABLES := $(filter table%,$(EXPERIMENT_NAMES)) $(filter-out table%,$(EXPERIMENT_NAMES))
# Appendix B (table11, table12): the target datasets' roots and, at PROFILE=paper, a folder of torchvision's vgg16/vgg19 weights
VOC2007 ?=
VOC2012 ?=
CALTECH101 ?=
CALTECH256 ?=
TRANSFER_DATASETS := VOC2007 VOC2012 CALTECH101 CALTECH256
WEIGHTS ?=
TRANSFER_ARGS = $(foreach name,$(TRANSFER_DATASETS),$(if $($(name)),--transfer-data $(name)=$($(name)))) $(if $(WEIGHTS),--weights-dir $(WEIGHTS))
RUN_ARGS = --profile $(PROFILE) $(if $(DATA),--data $(DATA)) --runs $(RUNS) --gpus $(GPUS) --launch $(LAUNCH) --slurm-args='$(SLURM_ARGS)' --seeds $(SEEDS) $(if $(PRECISION),--precision $(PRECISION)) $(if $(JOBS),--jobs $(JOBS)) $(if $(TB),--tensorboard) $(TRANSFER_ARGS)
REPORT_ARGS = --profile $(PROFILE) $(if $(DATA),--data $(DATA))
.PHONY: help venv test bench gpu-check data table1 table2 params clean-venv report status all-ablations pretrained $(RESULT_TABLES)

help: ## list the targets
	@echo "vgg-repro make targets:"
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z0-9-]+):.*## (.*)/  make \1\t\2/' | expand -t 24
	@echo "variables: PROFILE=smoke|paper|ci (default smoke)  DATA=dataset folder (default: the profile's; smoke: data/synthetic)"
	@echo "           GPUS=N (torchrun)  LAUNCH=local|slurm  SLURM_ARGS='--partition=...'  RUNS=runs folder (default runs)"
	@echo "           SEEDS=N (train every run with seeds 0..N-1; reports show mean [95% interval] +- std; default 1)"
	@echo "           PRECISION=fp32|bf16|auto (evaluation arithmetic; default: the profile's, fp32)"
	@echo "           JOBS=N (runs trained at once; default 2 on a CPU of 2+ cores, 1 on GPUs)"
	@echo "           TB=1 (each run also writes TensorBoard scalars under RUNS/<profile>/<run>/tensorboard/: tensorboard --logdir runs/)"
	@echo "           VOC2007= VOC2012= CALTECH101= CALTECH256= (table11, table12: the target datasets' roots; the toy sets need none)"
	@echo "           WEIGHTS=folder of torchvision's vgg16-*.pth, vgg19-*.pth (table11, table12 at PROFILE=paper; default torchvision's cache)"
	@echo "           PYTHON (the interpreter that creates .venv, default python3)"

$(STAMP): requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
		{ echo "error: $(PYTHON) is older than Python 3.10; run make PYTHON=python3.11 (or newer)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

venv: $(STAMP) ## create or refresh .venv from requirements.txt

TEST_WORKERS ?= 2
test: $(STAMP) ## run the whole test suite (TEST_WORKERS=2 processes, one torch thread each)
	$(PY) -m pytest -n $(TEST_WORKERS)

bench: $(STAMP) ## run the benchmarks; prints throughput ratios against references
	$(PY) -m pytest tests/benchmarks --benchmark-enable --benchmark-only --benchmark-columns=mean,stddev,rounds

gpu-check: ## measure the cluster path on this machine's GPU into reports/gpu.md; run with the machine's own python: make gpu-check PY=python3 (no .venv)
	$(PY) -m vgg gpu-check --size full --out $(REPORTS)/gpu.md

data: $(STAMP) ## generate the embedded synthetic dataset into data/synthetic (skipped when present)
	$(PY) -m vgg data synth --out data/synthetic

table1: $(STAMP) ## write reports/table1.md (the configurations, from vgg/nets/configs.py)
	$(PY) -m vgg report table1 --out-dir $(REPORTS)

table2: $(STAMP) ## write reports/table2.md (parameters and MACs per configuration)
	$(PY) -m vgg report table2 --out-dir $(REPORTS)

params: $(STAMP) ## print the Table 2 figures
	$(PY) -m vgg params

$(RESULT_TABLES): %: $(STAMP)
	$(PY) -m vgg run $* $(RUN_ARGS)
	@if [ "$(LAUNCH)" = local ]; then $(PY) -m vgg report $* $(REPORT_ARGS); fi

table3: ## Table 3: single-scale dense evaluation of A-E (PROFILE=smoke on the synthetic set by default)
table4: ## Table 4: multi-scale dense evaluation
table5: ## Table 5: dense vs multi-crop vs both (D, E at S in [256, 512])
table6: ## Table 6: ConvNet fusion
table7: ## Table 7: comparison with the state of the art, with our best results
table8: ## Table 8 (Appendix A): localisation error of the box regressors (SCR, PCR; FC-only or all layers), one centre crop
table9: ## Table 9 (Appendix A): localisation error under the dense protocol with the greedy merge, and the fusion
table10: ## Table 10 (Appendix A): our best localisation beside the published ones
table11: ## Table 11 (Appendix B): VOC and Caltech classification with fixed VGG features and linear SVMs (VOC2007=DIR ... at PROFILE=paper)
table12: ## Table 12 (Appendix B): VOC-2012 action classification, image and image+box features (VOC2012=DIR at PROFILE=paper)
ablations: ## ablations: every paired comparison of the paper, with intervals and verdicts (results/comparisons.csv)

all-ablations: $(STAMP) ## every table and ablation, then every report
	$(PY) -m vgg run $(RESULT_TABLES) $(RUN_ARGS)
	@if [ "$(LAUNCH)" = local ]; then $(PY) -m vgg report table1 table2 $(RESULT_TABLES) $(REPORT_ARGS); fi

WEIGHTS_DIR ?=
LIMIT ?=
pretrained: $(STAMP) ## torchvision's VGG weights in WEIGHTS_DIR under the paper's protocols (DATA=imagenet; LIMIT=N images)
	@test -n "$(WEIGHTS_DIR)" || { echo "make pretrained needs WEIGHTS_DIR=folder of vgg*.pth files (and DATA=...)"; exit 2; }
	$(PY) -m vgg pretrained --weights-dir $(WEIGHTS_DIR) --data $(if $(DATA),$(DATA),data/synthetic) $(if $(LIMIT),--limit $(LIMIT))
	$(PY) -m vgg report pretrained $(if $(DATA),--data $(DATA))

TABLES ?=
status: $(STAMP) ## where a suite run stands: each run's state, epoch n of N, best val error, time left (TABLES=table3 ...; default every table)
	$(PY) -m vgg status $(TABLES) --profile $(PROFILE) $(if $(DATA),--data $(DATA)) --runs $(RUNS) --seeds $(SEEDS) $(if $(JOBS),--jobs $(JOBS))

report: $(STAMP) ## re-render every report from results/ (PROFILE's rows)
	$(PY) -m vgg report table1 table2 $(RESULT_TABLES) $(REPORT_ARGS)

clean-venv: ## remove .venv
	rm -rf $(VENV)
