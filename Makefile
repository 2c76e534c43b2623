# Two entry points for a fresh machine (see README):
#   make demo   create the environment if missing, run the notebook pipeline on synthetic data
#   make test   create the environment if missing, run the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.semkit-installed

.PHONY: env demo test lint clean-runs

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 11) else "semkit needs Python >= 3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --progress-bar off -e '.[dev]'
	# MinkowskiEngine (sparse FCMAE backend): built once (~6 min on 2 cores), then installed from a cached wheel
	bash semkit/ssl/install_minkowski.sh $(BIN)/python
	touch $(STAMP)

env: $(STAMP)

demo: $(STAMP)
	$(BIN)/semkit demo

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile --timeout 900

lint: $(STAMP)
	$(BIN)/ruff check semkit tests

clean-runs:
	rm -rf papermill_runs/demo figures/demo
