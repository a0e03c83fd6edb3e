# Two commands do everything: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test demo lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=23"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# One torch thread per process: the suite runs several processes at once on small machines.
test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q tests

demo: $(STAMP)
	$(BIN)/hitdet demo --out runs/demo --force

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf runs build *.egg-info
