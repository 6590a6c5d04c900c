# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv, installs the CPU torch wheel first, then taskspec, then runs the demo
#   make test   the same set-up (plus test dependencies), then the full test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install torch==2.13.0      # local CPU wheel; any other torch spec pulls CUDA packages
	$(BIN)/pip install -e '.[test]'
	touch $@

demo: $(STAMP)
	$(BIN)/taskspec demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) src/*.egg-info
