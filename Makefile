# videomosaic: every target works on a fresh clone with only Python 3.11+ and make.
#   make demo                      install, then index the built-in sample corpus
#   make test                      install, then run the tests (not the slow ones)
#   make lint                      ruff, and the import layering and no-cycle contracts
#   make index CORPUS=DIR [INDEX=DIR] [ARGS="--set index.clusters=300"]
#   make render VIDEO=path-or-URL [INDEX=DIR] [OUT=FILE] [ARGS="--set render.alpha=0"]
#   make photo IMAGE=FILE [INDEX=DIR] [OUT=FILE] [ARGS="--cells 200 --tile-px 64 --dzi"]
#   make faces SRC=DIR OUT=DIR [ARGS="--min-size 48"]   face-tile corpus, then make index CORPUS=DIR
#   make zoom IMAGE=FILE [INDEX=DIR] [OUT=FILE] [ARGS="--target me.jpg --audio song.mp3"]
#   make live SOURCE=/dev/video0|FILE|URL [INDEX=DIR] [ARGS="--loop --grow faces/"]
#   make bench-index [BENCH_ARGS="--count 20000"]
#   make clean-cache [ARGS="--older-than 2d --dry-run"]   stale checkpoints, temp files, old renders

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CACHE  ?= .cache
INDEX  ?= $(CACHE)/index
CORPUS ?=
VIDEO  ?=
IMAGE  ?=
SRC    ?=
SOURCE ?=
OUT    ?=
ARGS   ?=
BENCH_ARGS ?=
PYTEST_ARGS ?=
SAMPLE := $(CACHE)/sample

export MOSAIC_CACHE := $(CACHE)

.PHONY: setup test lint index render photo faces zoom live demo bench-index bench-render clean clean-cache

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	$(BIN)/python -m compileall -q pipeline  # (as a wheel's install does: no compile per run)
	touch $@

setup: $(VENV)/.installed

test: setup
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check pipeline tests scripts
	$(BIN)/lint-imports --no-cache

index: setup
	@test -n "$(CORPUS)" || { echo "usage: make index CORPUS=DIR [INDEX=DIR] [ARGS=...]" >&2; exit 2; }
	$(BIN)/mosaic index --corpus "$(CORPUS)" --index "$(INDEX)" $(ARGS)

render: setup
	@test -n "$(VIDEO)" || { echo "usage: make render VIDEO=path-or-URL [INDEX=DIR] [OUT=FILE] [ARGS=...]" >&2; exit 2; }
	$(BIN)/mosaic render "$(VIDEO)" --index "$(INDEX)" $(if $(OUT),--out "$(OUT)") $(ARGS)

photo: setup
	@test -n "$(IMAGE)" || { echo "usage: make photo IMAGE=FILE [INDEX=DIR] [OUT=FILE] [ARGS=...]" >&2; exit 2; }
	$(BIN)/mosaic photo "$(IMAGE)" --index "$(INDEX)" $(if $(OUT),--out "$(OUT)") $(ARGS)

zoom: setup
	@test -n "$(IMAGE)" || { echo "usage: make zoom IMAGE=FILE [INDEX=DIR] [OUT=FILE] [ARGS=...]" >&2; exit 2; }
	$(BIN)/mosaic zoom "$(IMAGE)" --index "$(INDEX)" $(if $(OUT),--out "$(OUT)") $(ARGS)

live: setup
	@test -n "$(SOURCE)" || { echo "usage: make live SOURCE=/dev/video0|FILE|URL [INDEX=DIR] [ARGS=...]" >&2; exit 2; }
	$(BIN)/mosaic live "$(SOURCE)" --index "$(INDEX)" $(ARGS)

faces: setup
	@test -n "$(SRC)" -a -n "$(OUT)" || { echo "usage: make faces SRC=DIR OUT=DIR [ARGS=...]" >&2; exit 2; }
	$(BIN)/mosaic faces "$(SRC)" --out "$(OUT)" $(ARGS)

demo: setup
	$(BIN)/mosaic sample --out $(SAMPLE)/corpus
	$(BIN)/mosaic index --corpus $(SAMPLE)/corpus --index $(SAMPLE)/index --config configs/sample.toml $(ARGS)
	$(BIN)/mosaic inspect $(SAMPLE)/index --out $(SAMPLE)/clusters.png --zoom 2
	$(BIN)/mosaic sample-clip --out $(SAMPLE)/clip.mp4
	$(BIN)/mosaic render $(SAMPLE)/clip.mp4 --index $(SAMPLE)/index --out $(SAMPLE)/demo-mosaic.mp4 --preset veryfast
	$(BIN)/mosaic photo $(SAMPLE)/corpus/sample_0000.png --index $(SAMPLE)/index --out $(SAMPLE)/demo-photo.jpg --cells 48 --dzi
	$(BIN)/mosaic zoom $(SAMPLE)/corpus/sample_0000.png --index $(SAMPLE)/index --out $(SAMPLE)/demo-zoom.mp4 --size 640x360 --duration 4 --cells 32 --preset veryfast
	@echo "demo: mosaic video $(SAMPLE)/demo-mosaic.mp4 (index $(SAMPLE)/index, contact sheet $(SAMPLE)/clusters.png)"
	@echo "demo: still mosaic $(SAMPLE)/demo-photo.jpg, zoom page $(SAMPLE)/demo-photo.html"
	@echo "demo: zoom video $(SAMPLE)/demo-zoom.mp4 (from the mosaic into one of its photos)"

bench-index: setup
	$(BIN)/python scripts/bench_index.py $(BENCH_ARGS)

bench-render: setup
	@test -n "$(VIDEO)" || { echo "usage: make bench-render VIDEO=FILE [INDEX=DIR] [BENCH_ARGS=...]" >&2; exit 2; }
	$(BIN)/python scripts/bench_render.py "$(VIDEO)" --index "$(INDEX)" $(BENCH_ARGS)

clean:
	rm -rf $(CACHE)

clean-cache: setup
	$(BIN)/mosaic clean --cache "$(CACHE)" $(ARGS)
