# One command sets up and runs the main job; one sets up and runs the tests. Both create .venv when missing.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

# constraints.txt pins every package to the versions the suite passed with; `make upgrade-deps` moves them.
CONSTRAINTS ?= constraints.txt

.PHONY: demo test lint format bench clean upgrade-deps

$(BIN)/vidattn: pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) -e ".[dev]"
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

upgrade-deps:  ## re-resolve every dependency in a fresh venv, rewrite constraints.txt, run the suite with it
	rm -rf .venv-upgrade
	$(PY) -m venv .venv-upgrade
	.venv-upgrade/bin/python -m pip install -q --upgrade pip
	.venv-upgrade/bin/python -m pip install -q --upgrade -e ".[dev,bench]"
	{ sed -n '1,2p' $(CONSTRAINTS); .venv-upgrade/bin/python -m pip freeze --exclude-editable | grep -v '^vidattn'; } > $(CONSTRAINTS).new
	.venv-upgrade/bin/python -m pytest -q
	mv $(CONSTRAINTS).new $(CONSTRAINTS)
	rm -rf .venv-upgrade $(VENV)
	@echo "constraints.txt moved and the suite passed with it: review 'git diff constraints.txt' and commit"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
