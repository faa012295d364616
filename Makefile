# kubeloop: `make help` lists the targets. The venv is created on first use;
# only python3 (3.10+) and make are needed.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   ?= demo
# The project image: IMAGE_NAME is yours to choose, the tag is the package version.
IMAGE_NAME   ?= ghcr.io/kubeloop/kubeloop
VERSION      := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE        ?= $(IMAGE_NAME):$(VERSION)
CODE_VERSION := $(shell git describe --always --dirty 2>/dev/null || echo unknown)
KIND_CLUSTER ?= kind
MINIKUBE_FLAGS ?= --cpus=4 --memory=10g --disk-size=40g
OVERLAY      ?= kind
# MinIO as this machine sees it, through `kubectl port-forward -n kubeloop svc/minio 9000:9000`.
S3_LOCAL     ?= http://localhost:9000
# The lock tool's own version, so `make lock` resolves the same way everywhere.
UV_VERSION ?= 0.13.9
LOCK_FLAGS := --python-version 3.11 --universal --generate-hashes --quiet

.PHONY: help venv lock demo test test-fast lint compile bench bench-overhead bench-storage bench-gate bench-drift bench-serving clean \
	image kind-up kind-load minikube-up minikube-load s3-env manifests apply cluster-data

help: ## Show this help
	@echo "kubeloop: ML lifecycle components for Kubeflow Pipelines"
	@echo
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo
	@echo "Quick start: make demo, then make test."

# Exact versions (with hashes) from the lock, then kubeloop itself without
# resolving anything: every machine gets the packages the tests were run with.
$(STAMP): pyproject.toml requirements/lock-test.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements/lock-test.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

venv: $(STAMP) ## Create .venv and install kubeloop with its test tools (exact versions from the lock)

lock: ## Re-resolve requirements/*.txt after changing dependencies in pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)"
	$(BIN)/uv pip compile pyproject.toml $(LOCK_FLAGS) -o requirements/lock.txt
	$(BIN)/uv pip compile pyproject.toml requirements/build.in --extra test $(LOCK_FLAGS) -o requirements/lock-test.txt
	@echo "Lock refreshed: run make test, then commit requirements/."

demo: $(STAMP) ## The whole loop on generated data: train, serve, shadow, drift, monitor, retrain (no servers to install)
	$(BIN)/python -m kubeloop.demo --dir $(DEMO)

test: $(STAMP) ## Run the test suite (unit, S3 contract on a loopback server, local pipelines)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP) ## Run the tests that take seconds, not minutes
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP) ## Check style and common mistakes with ruff
	$(BIN)/ruff check kubeloop components pipelines tests bench

compile: $(STAMP) ## Write the pipeline YAML into dist/ (IMAGE=... to choose the image)
	$(BIN)/kubeloop compile --image $(IMAGE) --output dist/training-pipeline.yaml

bench: bench-overhead bench-serving bench-drift bench-gate ## Every benchmark, each a ratio against the stock alternative in the same run

bench-overhead: $(STAMP) ## Framework overhead: `kubeloop run` vs a plain script on 1M rows x 20 columns
	$(BIN)/python bench/bench_overhead.py

bench-storage: $(STAMP) ## Round trip of a 500 MB artifact through S3: throughput and peak memory
	$(BIN)/python bench/bench_storage.py

bench-gate: $(STAMP) ## The gate's paired bootstrap and row fingerprints vs sklearn.metrics in a loop and hash_pandas_object
	$(BIN)/python bench/bench_gate.py

image: ## Build the project image with docker (IMAGE_NAME=..., tag = package version)
	docker build --build-arg KUBELOOP_CODE_VERSION=$(CODE_VERSION) -t $(IMAGE) .
	@echo "built $(IMAGE) (code $(CODE_VERSION))"

kind-up: ## Create a local kind cluster (KIND_CLUSTER=kind); downloads the node image
	kind create cluster --name $(KIND_CLUSTER)

kind-load: ## Copy the image into the kind cluster as kind.local/kubeloop:VERSION
	docker tag $(IMAGE) kind.local/kubeloop:$(VERSION)
	kind load docker-image kind.local/kubeloop:$(VERSION) --name $(KIND_CLUSTER)

minikube-up: ## Start a local minikube cluster big enough for KFP and KServe (MINIKUBE_FLAGS=...)
	minikube start $(MINIKUBE_FLAGS)

minikube-load: ## Copy the image into minikube as dev.local/kubeloop:VERSION
	docker tag $(IMAGE) dev.local/kubeloop:$(VERSION)
	minikube image load dev.local/kubeloop:$(VERSION)

s3-env: ## Write manifests/base/s3.env with random MinIO/S3 keys (never overwrites it)
	@if [ -e manifests/base/s3.env ]; then echo "manifests/base/s3.env exists; left as it is"; else \
	  umask 077 && $(PYTHON) -c 'import secrets; print(f"AWS_ACCESS_KEY_ID=kubeloop-{secrets.token_hex(4)}\nAWS_SECRET_ACCESS_KEY={secrets.token_urlsafe(30)}")' > manifests/base/s3.env \
	  && echo "wrote manifests/base/s3.env (git-ignored)"; fi

manifests: s3-env ## Render the overlays into dist/manifests/ for review (nothing is applied)
	@mkdir -p dist/manifests
	@for o in kind minikube; do kubectl kustomize manifests/overlays/$$o > dist/manifests/$$o.yaml && echo "dist/manifests/$$o.yaml"; done
	kubectl kustomize manifests/examples > dist/manifests/examples.yaml && echo "dist/manifests/examples.yaml"

apply: s3-env ## Apply an overlay to the current kubectl context (OVERLAY=kind|minikube) and wait for the buckets
	kubectl apply --server-side -k manifests/overlays/$(OVERLAY)
	kubectl -n kubeloop rollout status deployment/minio --timeout=300s
	kubectl -n kubeloop wait --for=condition=complete job/kubeloop-buckets --timeout=300s

cluster-data: $(STAMP) ## Upload two churn datasets (first, then later and drifted) to s3://data/churn/ via S3_LOCAL
	@test -e manifests/base/s3.env || { echo "manifests/base/s3.env is missing: run make s3-env and apply the manifests first"; exit 2; }
	set -a && . manifests/base/s3.env && set +a && AWS_ENDPOINT_URL=$(S3_LOCAL) AWS_REGION=us-east-1 \
	$(BIN)/python -c 'import sys, tempfile, pandas as pd; from kubeloop.datagen import make_churn; from kubeloop.storage import open_store; \
	first = make_churn(6000, seed=7, start="2024-07-01"); later = make_churn(3000, seed=8, start="2025-10-01", drift=0.3); \
	d = tempfile.mkdtemp(); first.to_csv(d + "/a.csv", index=False); pd.concat([first, later], ignore_index=True).to_parquet(d + "/b.parquet", index=False); \
	store = open_store("s3://data/churn"); store.upload_file("churn-2025.csv", d + "/a.csv"); store.upload_file("churn-2025-2026q1.parquet", d + "/b.parquet"); \
	print("uploaded s3://data/churn/churn-2025.csv and s3://data/churn/churn-2025-2026q1.parquet", file=sys.stderr)'

bench-drift: $(STAMP) ## Drift: `kubeloop drift` vs Evidently on 1M rows x 20 columns, then 10M rows under 1 GB
	@# Evidently gets a venv of its own: its dependencies must not move the locked ones.
	@# Evidently 0.7 imports a pandas function that pandas 3 removed.
	@test -x $(VENV)-evidently/bin/python || { $(PYTHON) -m venv $(VENV)-evidently && \
	  $(VENV)-evidently/bin/python -m pip install --quiet "evidently>=0.7" "pandas<3"; }
	EVIDENTLY_PYTHON=$(VENV)-evidently/bin/python $(BIN)/python bench/bench_drift.py

clean: ## Remove local runs, the demo output and build files (keeps .venv)
	rm -rf .kubeloop $(DEMO) dist build *.egg-info .pytest_cache

.PHONY: bench-serving
bench-serving: $(STAMP) ## One-row latency: kubeloop's predictor vs a stock KServe model on the same pipeline
	$(BIN)/python bench/bench_serving.py
