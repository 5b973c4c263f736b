# videomosaic: every target works on a fresh clone with only Python 3.11+ and make.
#   make demo                      install, then index the built-in sample corpus
#   make test                      install, then run the tests (not the slow ones)
#   make index CORPUS=DIR [INDEX=DIR] [ARGS="--set index.clusters=300"]
#   make bench-index [BENCH_ARGS="--count 20000"]

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CACHE  ?= .cache
INDEX  ?= $(CACHE)/index
CORPUS ?=
VIDEO  ?=
ARGS   ?=
BENCH_ARGS ?=
PYTEST_ARGS ?=
SAMPLE := $(CACHE)/sample

export MOSAIC_CACHE := $(CACHE)

.PHONY: setup test lint index render demo bench-index clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

setup: $(VENV)/.installed

test: setup
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check pipeline tests scripts

index: setup
	@test -n "$(CORPUS)" || { echo "usage: make index CORPUS=DIR [INDEX=DIR] [ARGS=...]" >&2; exit 2; }
	$(BIN)/mosaic index --corpus "$(CORPUS)" --index "$(INDEX)" $(ARGS)

render: setup
	$(BIN)/mosaic render "$(VIDEO)" $(ARGS)

demo: setup
	$(BIN)/mosaic sample --out $(SAMPLE)/corpus
	$(BIN)/mosaic index --corpus $(SAMPLE)/corpus --index $(SAMPLE)/index --config configs/sample.toml $(ARGS)
	$(BIN)/mosaic inspect $(SAMPLE)/index --out $(SAMPLE)/clusters.png --zoom 2
	@echo "demo: sample index in $(SAMPLE)/index, contact sheet $(SAMPLE)/clusters.png"

bench-index: setup
	$(BIN)/python scripts/bench_index.py $(BENCH_ARGS)

clean:
	rm -rf $(CACHE)
