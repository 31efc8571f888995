# One entry point. `make run` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast bench app venv clean-venv strip

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

## the main job: the whole notebook series (profile quick; data from BCLIB_DATA or data/)
run: $(STAMP)
	$(BIN)/bclib run $(ARGS)

## the tests (unit, real data when BCLIB_SHARED_DATA is set, notebook smoke runs)
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not browser" $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/bclib bench $(ARGS)

## the prediction app (notebook 08) as a page on http://127.0.0.1:8866/ (ARGS="--run RUN_ID" or "--model PATH")
app: $(STAMP)
	$(BIN)/bclib app $(ARGS)

strip:
	$(BIN)/nbstripout notebooks/*.ipynb

clean-venv:
	rm -rf $(VENV)
