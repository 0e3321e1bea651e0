# Two entry points (README): `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: setup demo test clean

setup: $(VENV)/.installed

# torch==2.13.0 goes in first so that resolving the package pulls no other torch build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: setup
	$(BIN)/avrsp info
	$(BIN)/avrsp synth runs/demo-data --videos 6 --frames 48 --overwrite
	$(BIN)/avrsp data check runs/demo-data

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
