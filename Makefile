# mdvq: `make run` trains the VQ-VAE on the embedded simulated radar data; `make test` runs the tests.
# Both create .venv and install the project into it when it is missing or pyproject.toml changed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.mdvq-installed
ARGS   ?=

.PHONY: run test test-slow preview phase1 bench lint clean-outputs

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)  ## main job: python -m mdvq.run model=vqvae data=radar (extra overrides: ARGS="...")
	$(BIN)/python -m mdvq.run model=vqvae data=radar $(ARGS)

test: $(STAMP)  ## default test suite (excludes tests marked slow)
	$(BIN)/python -m pytest -q $(ARGS)

test-slow: $(STAMP)  ## only the tests marked slow: multi-process DDP and launcher runs (CI runs them after `make test`)
	$(BIN)/python -m pytest -q -m slow $(ARGS) || test $$? -eq 5

preview: $(STAMP)  ## PNG grid of the simulated data, one example per class
	$(BIN)/python -m mdvq.run task=preview data=radar $(ARGS)

phase1: $(STAMP)  ## KL-VAE and VQ-VAE on the same split, then the decision rule
	$(BIN)/python -m mdvq.run experiment=phase1 $(ARGS)

bench: $(STAMP)  ## simulator benchmark table
	$(BIN)/python experiments/bench_simulator.py

lint: $(STAMP)
	$(BIN)/ruff check mdvq tests experiments

clean-outputs:
	rm -rf outputs multirun
