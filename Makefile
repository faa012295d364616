# kubeloop: `make help` lists the targets. The venv is created on first use;
# only python3 (3.10+) and make are needed.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   ?= demo
IMAGE  ?= ghcr.io/kubeloop/kubeloop:0.1.0

.PHONY: help venv demo test test-fast lint compile bench bench-storage clean

help: ## Show this help
	@echo "kubeloop: ML lifecycle components for Kubeflow Pipelines"
	@echo
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo
	@echo "Quick start: make demo, then make test."

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

venv: $(STAMP) ## Create .venv and install kubeloop with its test tools

demo: $(STAMP) ## Run the whole loop twice on generated sample data, no servers needed
	$(BIN)/python -m kubeloop.demo --dir $(DEMO)

test: $(STAMP) ## Run the test suite (unit, S3 contract on a loopback server, local pipelines)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP) ## Run the tests that take seconds, not minutes
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP) ## Check style and common mistakes with ruff
	$(BIN)/ruff check kubeloop components pipelines tests bench

compile: $(STAMP) ## Write the pipeline YAML into dist/ (IMAGE=... to choose the image)
	$(BIN)/kubeloop compile --image $(IMAGE) --output dist/training-pipeline.yaml

bench: $(STAMP) ## Framework overhead: `kubeloop run` vs a plain script on 1M rows x 20 columns
	$(BIN)/python bench/bench_overhead.py

bench-storage: $(STAMP) ## Round trip of a 500 MB artifact through S3: throughput and peak memory
	$(BIN)/python bench/bench_storage.py

clean: ## Remove local runs, the demo output and build files (keeps .venv)
	rm -rf .kubeloop $(DEMO) dist build *.egg-info .pytest_cache

.PHONY: bench-serving
bench-serving: $(STAMP) ## One-row latency: kubeloop's predictor vs a stock KServe model on the same pipeline
	$(BIN)/python bench/bench_serving.py
