# One command sets up and runs the main job; one sets up and runs the tests. Both create .venv when missing.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint format bench clean

$(BIN)/vidattn: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(BIN)/vidattn

demo: $(BIN)/vidattn  ## train the embedded default (synthetic motion data) on this machine
	$(BIN)/vidattn train

test: $(BIN)/vidattn  ## the whole test suite
	$(BIN)/python -m pytest -q

lint: $(BIN)/vidattn
	$(BIN)/ruff check vidattn tests scripts
	$(BIN)/ruff format --check vidattn tests scripts

format: $(BIN)/vidattn
	$(BIN)/ruff format vidattn tests scripts
	$(BIN)/ruff check --fix vidattn tests scripts

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
