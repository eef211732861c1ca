# ftcl: the README's two commands are `make run` and `make test`; both set everything up first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SPEC   ?= tune_configs/robotic_sequence/quickstart.yaml

.PHONY: setup run test test-fast ui bench

setup: $(VENV)/.ftcl-installed

# nle 1.3.0 pins gymnasium 1.2.0 while ray[rllib] 2.60 pins 1.2.2: installed alone with --no-deps
# (it works on 1.2.2). Installed together, pip silently falls back to nle 0.9.1 and fails to build.
$(VENV)/.ftcl-installed: requirements-lock.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -r requirements-lock.txt
	$(BIN)/pip install -q --no-deps nle==1.3.0
	$(BIN)/pip install -q --no-deps -e .
	touch $@

run: setup
	$(BIN)/ftcl run $(SPEC)
	$(BIN)/ftcl report $(SPEC)

test: setup
	$(BIN)/python -m pytest tests -q

test-fast: setup
	$(BIN)/python -m pytest tests -q -m "not slow"

ui: setup
	$(BIN)/ftcl ui

# Throughput benchmark (not part of CI): installs the optional peer (Stable-Baselines3) first.
bench: setup
	$(BIN)/pip install -q stable-baselines3==2.9.2 pyinstrument --no-deps
	$(BIN)/ftcl bench --out results/throughput.csv
