# The two commands: `make run` (the demo, end to end) and `make test` (the test suite).
# Both create the virtual environment on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONF   ?= conf/local.yaml
DS     ?= 2025-01-07

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONHASHSEED := 0

.PHONY: run test lint install bench package env-archive clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

## the demo: generate data -> fine-tune -> nightly for one ds -> audit summary, tables, example SQL
run: $(STAMP)
	$(BIN)/python -m jobs demo --conf $(CONF) --ds $(DS)

## the tests (real Spark on local[2], real Delta tables, tiny and real BERT models)
test: $(STAMP)
	$(BIN)/python -m pytest -q

## static checks: ruff (pyflakes, pycodestyle, import order, bugbear) and mypy, configured in pyproject.toml
lint: $(STAMP)
	$(BIN)/ruff check plumbing jobs relevance udfs schemas tests bench
	$(BIN)/python -m mypy

## scoring throughput benchmark: naive UDF, CrossEncoder, predict_batch_udf, our scorer, our score job
bench: $(STAMP)
	$(BIN)/python bench/score_bench.py --out bench/results.json

## a zip of the packages for spark-submit --py-files
package:
	$(PYTHON) -m jobs.core.package dist/relevance.zip

## the virtualenv's runtime dependencies as a tar.gz for spark-submit --archives dist/env.tar.gz#env (2.8 GiB; 4.6 unpacked)
env-archive: $(STAMP)
	$(BIN)/python -m jobs.core.package --env dist/env.tar.gz --cpu-only

clean:
	rm -rf warehouse dist .pytest_cache
