# Two commands for a fresh Linux machine with only python3:
#   make book [PROFILE=smoke|cpu|gpu|paper] [SOFTLIB_DATA=dir] [BOOK_ARGS=...]
#                                                   compute, execute every section, build the HTML book
#       (gpu / paper without a GPU: rendered from the bundles in results/<profile>/, no training;
#        BOOK_ARGS=--require-complete fails instead of rendering 'not computed' pages)
#   make test                                                 run the test suite (what CI runs)
# Each sets up its own environment (installs uv into .tools/ if it is not on PATH, then `uv sync`).

PROFILE ?= cpu
BOOK_ARGS ?=
# the data root of `make book` / `make data-mirror`; `make test` only sees it if you export it
SOFTLIB_DATA ?= $(HOME)/.cache/softlib/data
UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/bin/uv)
PY := $(CURDIR)/.venv/bin/python

.PHONY: book test env data-mirror clean-book

$(CURDIR)/.tools/bin/uv:
	python3 -m venv $(CURDIR)/.tools
	$(CURDIR)/.tools/bin/pip install --quiet uv

env: $(UV)
	$(UV) sync --frozen --extra book --extra cluster

book: env
	SOFTLIB_DATA=$(SOFTLIB_DATA) $(PY) -m softlib.book all --profile $(PROFILE) $(BOOK_ARGS)

test: env
	$(PY) -m pytest -q

# Prepare the offline mirror of ../shared/data (these machines only) into $(SOFTLIB_DATA).
data-mirror: env
	$(PY) ../shared/data/materialize.py --out $(SOFTLIB_DATA)
	$(PY) -m softlib.data --root $(SOFTLIB_DATA) repack cifar10

clean-book:
	rm -rf _build book/sections book/generated
