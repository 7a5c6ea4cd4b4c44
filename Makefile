# The two commands of the README:
#   make reproduce   set up .venv if needed, then run every notebook on PROFILE (default cpu)
#   make test        set up .venv if needed, then run the whole test suite (smoke notebooks included)
# Other targets: make lab (JupyterLab on the notebooks), make report (HTML pages of PROFILE's executed
# notebooks), make bench (real early-exit speed, training throughput and backbone quality tables; never
# trains), make dry-run (build every model of PROFILE without training), make clean-smoke.

PYTHON   ?= python3
VENV     ?= .venv
PROFILE  ?= cpu
ONLY     ?=
BIN      := $(VENV)/bin
# Local copies of the data sets (CIFAR-10 JPEG archive, MNIST, Fashion-MNIST) beside the checkout,
# used when present; otherwise the data sets are downloaded by torchvision.
LOCAL_DATA ?= $(wildcard $(abspath ../shared/data))
# Test processes (pytest-xdist): the paper rehearsal runs in one while the rest of the suite runs in the
# other; each uses one torch thread (tests/conftest.py), so two fit two cores.
TEST_WORKERS ?= 2
export EARLYEXIT_LOCAL_DATA ?= $(LOCAL_DATA)

.PHONY: setup reproduce report test lab bench benchmark dry-run clean-smoke

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,cluster]'
	touch $@

setup: $(VENV)/.installed

reproduce: setup
	$(BIN)/python -m earlyexit.reproduce --profile $(PROFILE) $(if $(ONLY),--only $(ONLY))

report: setup
	$(BIN)/python -m earlyexit.htmlreport --profile $(PROFILE)

dry-run: setup
	$(BIN)/python -m earlyexit.reproduce --profile $(PROFILE) --dry-run $(if $(ONLY),--only $(ONLY))

test: setup
	$(BIN)/python -m pytest tests -n $(TEST_WORKERS) --dist worksteal --durations=15

# JupyterLab on this environment's kernel, loopback only, opening the primer. To use a profile there, edit
# `profile = "cpu"` in a notebook's parameters cell (e.g. to "smoke") and run all cells.
LAB_PORT ?= 8888
lab: setup
	$(BIN)/python -m ipykernel install --sys-prefix --name earlyexit --display-name "earlyexit (.venv)"
	$(BIN)/jupyter lab --ip=127.0.0.1 --port=$(LAB_PORT) --ServerApp.root_dir=. notebooks/00_primer.ipynb

bench benchmark: setup
	$(BIN)/python -m earlyexit.benchmark

clean-smoke:
	rm -rf reports/smoke figures/smoke
