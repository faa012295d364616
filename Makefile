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
# The image build's base. PYTHON_IMAGE empty: the Dockerfile's pinned default, or,
# when that cannot be pulled, BASE_IMAGE (made by `make base-image` from Debian packages).
PYTHON_IMAGE ?=
BASE_IMAGE   ?= kubeloop/python-base:3.11-bookworm
DEBIAN_MIRROR ?= $(or $(shell sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1),http://deb.debian.org/debian)
# A tarball of the debootstrapped base: reused when it exists (set it to keep one).
BASE_TARBALL ?=
# A CA bundle for pip inside the build (TLS-re-signing proxies); a build secret, in no layer.
CA_BUNDLE    ?=
# BuildKit is needed for the CA secret; Debian's docker.io client has it built in,
# newer clients need the buildx plugin (see README, air-gapped builds).
DOCKER       ?= $(shell if docker buildx version >/dev/null 2>&1; then echo docker; \
                  elif [ -x /usr/bin/docker ]; then echo /usr/bin/docker; else echo docker; fi)
KIND_CLUSTER ?= kind
MINIKUBE_FLAGS ?= --cpus=4 --memory=10g --disk-size=40g
OVERLAY      ?= kind
# MinIO as this machine sees it, through `kubectl port-forward -n kubeloop-storage svc/minio 9000:9000`.
S3_LOCAL     ?= http://localhost:9000
# The lock tool's own version, so `make lock` resolves the same way everywhere.
UV_VERSION ?= 0.13.9
LOCK_FLAGS := --python-version 3.11 --universal --generate-hashes --quiet

.PHONY: help venv lock demo test test-fast lint compile bench bench-overhead bench-storage bench-gate bench-drift bench-serving bench-train-memory clean \
	image base-image test-image kind-up kind-load minikube-up minikube-load s3-env manifests apply cluster-data

help: ## Show this help
	@echo "kubeloop: ML lifecycle components for Kubeflow Pipelines"
	@echo
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  make %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
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
	$(BIN)/uv pip compile pyproject.toml requirements/build.in $(LOCK_FLAGS) -o requirements/lock.txt
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

bench-overhead: $(STAMP) ## Framework overhead: `kubeloop run` vs a plain script on 1M rows x 20 columns, quiet and beside a busy process
	$(BIN)/python bench/bench_overhead.py --busy

bench-storage: $(STAMP) ## Round trip of a 500 MB artifact through S3: throughput and peak memory
	$(BIN)/python bench/bench_storage.py

bench-train-memory: $(STAMP) ## Peak memory of fitting each family on 1M rows x 20 columns, as a multiple of the float32 data
	$(BIN)/python bench/bench_train_memory.py

bench-gate: $(STAMP) ## The gate's paired bootstrap and row fingerprints vs sklearn.metrics in a loop and hash_pandas_object
	$(BIN)/python bench/bench_gate.py

image: ## Build the project image (IMAGE_NAME=..., CA_BUNDLE=FILE for pip behind a TLS proxy, PYTHON_IMAGE=base)
	@set -euo pipefail; base="$(PYTHON_IMAGE)"; \
	if [ -z "$$base" ]; then \
	  default=$$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile); \
	  if $(DOCKER) image inspect "$$default" >/dev/null 2>&1 || $(DOCKER) pull -q "$$default" >/dev/null 2>&1; then \
	    base=$$default; \
	  else \
	    echo "$$default cannot be pulled: building on $(BASE_IMAGE) (make base-image)" >&2; \
	    $(DOCKER) image inspect "$(BASE_IMAGE)" >/dev/null 2>&1 || $(MAKE) --no-print-directory base-image; \
	    base="$(BASE_IMAGE)"; \
	  fi; \
	fi; \
	secret=(); if [ -n "$(CA_BUNDLE)" ]; then \
	  test -r "$(CA_BUNDLE)" || { echo "CA_BUNDLE=$(CA_BUNDLE) is not a readable file" >&2; exit 2; }; \
	  secret=(--secret "id=pip-ca,src=$(CA_BUNDLE)"); fi; \
	DOCKER_BUILDKIT=1 $(DOCKER) build --network host --progress=plain "$${secret[@]}" --build-arg PYTHON_IMAGE="$$base" \
	  --build-arg KUBELOOP_CODE_VERSION=$(CODE_VERSION) -t $(IMAGE) . ; \
	echo "built $(IMAGE) on $$base (code $(CODE_VERSION)): $$($(DOCKER) image inspect -f '{{.Size}}' $(IMAGE) | awk '{printf "%.0f MB", $$1/1e6}')"

base-image: ## Build the Python 3.11 Debian bookworm base from Debian packages with debootstrap (root; no registry)
	@set -euo pipefail; \
	command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install debootstrap" >&2; exit 2; }; \
	tarball="$(BASE_TARBALL)"; keep=1; \
	if [ -z "$$tarball" ]; then tarball=$$(mktemp --suffix=.tar); rm -f "$$tarball"; keep=0; fi; \
	if [ ! -s "$$tarball" ]; then \
	  root=$$(mktemp -d); trap 'rm -rf "$$root"' EXIT; \
	  echo "debootstrap bookworm from $(DEBIAN_MIRROR) (about 2-4 minutes)" >&2; \
	  debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
	    bookworm "$$root" "$(DEBIAN_MIRROR)" >/dev/null; \
	  rm -rf "$$root"/var/lib/apt/lists/* "$$root"/var/cache/apt/* "$$root"/var/log/* \
	    "$$root"/usr/share/doc/* "$$root"/usr/share/man/* "$$root"/usr/share/info/*; \
	  tar -C "$$root" --numeric-owner -cf "$$tarball.part" . && mv "$$tarball.part" "$$tarball"; \
	fi; \
	$(DOCKER) import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' "$$tarball" $(BASE_IMAGE) >/dev/null; \
	[ "$$keep" = 1 ] || rm -f "$$tarball"; \
	echo "built $(BASE_IMAGE): $$($(DOCKER) run --rm $(BASE_IMAGE) python --version)"

test-image: $(STAMP) ## Test the built image as KServe and KFP run it (after make image; IMAGE=...)
	@$(DOCKER) image inspect $(IMAGE) >/dev/null 2>&1 || { echo "$(IMAGE) is not built: run make image first" >&2; exit 2; }
	KUBELOOP_TEST_IMAGE=$(IMAGE) KUBELOOP_DOCKER=$(DOCKER) $(BIN)/python -m pytest -q -p no:warnings tests/image
	@echo "tested $(IMAGE): $$($(DOCKER) image inspect -f '{{.Size}}' $(IMAGE) | awk '{printf "%.0f MB", $$1/1e6}')"

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

# One key file per S3 identity (see manifests/base/kustomization.yaml): MinIO's
# root user, the pipeline steps' user and the predictor's user.
S3_IDENTITIES := root pipeline predictor

s3-env: ## Write manifests/base/s3-{root,pipeline,predictor}.env with random MinIO/S3 keys (never overwrites one)
	@# The one key file of earlier releases was MinIO's root user: it stays the root.
	@if [ -e manifests/base/s3.env ] && [ ! -e manifests/base/s3-root.env ]; then \
	  ( umask 077 && cp manifests/base/s3.env manifests/base/s3-root.env ) \
	  && echo "manifests/base/s3-root.env: the root keys of manifests/base/s3.env (now unused)"; fi
	@for who in $(S3_IDENTITIES); do f=manifests/base/s3-$$who.env; \
	  if [ -e $$f ]; then echo "$$f exists; left as it is"; else \
	  ( umask 077 && $(PYTHON) -c 'import secrets, sys; print(f"AWS_ACCESS_KEY_ID=kubeloop-{sys.argv[1]}-{secrets.token_hex(4)}\nAWS_SECRET_ACCESS_KEY={secrets.token_urlsafe(30)}")' $$who > $$f ) \
	  && echo "wrote $$f (git-ignored)"; fi; done

manifests: s3-env ## Render the overlays into dist/manifests/ for review (nothing is applied)
	@mkdir -p dist/manifests
	@for o in kind minikube; do kubectl kustomize manifests/overlays/$$o > dist/manifests/$$o.yaml && echo "dist/manifests/$$o.yaml"; done
	kubectl kustomize manifests/examples > dist/manifests/examples.yaml && echo "dist/manifests/examples.yaml"

apply: s3-env ## Apply an overlay to the current kubectl context (OVERLAY=kind|minikube) and wait for the buckets
	kubectl apply --server-side -k manifests/overlays/$(OVERLAY)
	kubectl -n kubeloop-storage rollout status deployment/minio --timeout=300s
	kubectl -n kubeloop-storage wait --for=condition=complete job/kubeloop-buckets --timeout=300s

cluster-data: $(STAMP) ## Upload two churn datasets (first, then later and drifted) to s3://data/churn/ via S3_LOCAL
	@# Datasets are put in by whoever owns them; on this local MinIO that is its admin:
	@# the pipeline's and the predictor's keys may not write to s3://data.
	@test -e manifests/base/s3-root.env || { echo "manifests/base/s3-root.env is missing: run make s3-env and apply the manifests first"; exit 2; }
	set -a && . manifests/base/s3-root.env && set +a && AWS_ENDPOINT_URL=$(S3_LOCAL) AWS_REGION=us-east-1 \
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

# Pinned so the measured table can be re-run as it was; never in the locks.
BENCH_ENGINE_PINS ?= duckdb==2.0.0 polars==2.1.0 pyarrow==26.0.1 numpy
ENGINE_ROWS ?= 10000000

.PHONY: bench-engines
bench-engines: ## CSV -> Parquet and per-column statistics: pyarrow vs DuckDB vs Polars (ENGINE_ROWS=10M x 20 columns)
	@# DuckDB and Polars get a venv of their own: they are measured, not depended on.
	@test -x $(VENV)-bench/bin/python || { $(PYTHON) -m venv $(VENV)-bench && \
	  $(VENV)-bench/bin/python -m pip install --quiet $(BENCH_ENGINE_PINS); }
	$(VENV)-bench/bin/python bench/bench_engines.py --rows $(ENGINE_ROWS)

clean: ## Remove local runs, the demo output and build files (keeps .venv)
	rm -rf .kubeloop $(DEMO) dist build *.egg-info .pytest_cache

.PHONY: bench-serving
bench-serving: $(STAMP) ## One-row latency: kubeloop's predictor vs a stock KServe model on the same pipeline
	$(BIN)/python bench/bench_serving.py

# The generated tables (1M rows: 107 MiB of Parquet, 100M: about 11 GiB) are kept
# here and reused by the next run with the same seed; never in the repository.
BENCH_SCALE_DIR   ?= $(or $(TMPDIR),/tmp)/kubeloop-bench-scale
BENCH_SCALE_SIZES ?= 1M,10M,100M

.PHONY: bench-scale
bench-scale: $(STAMP) ## kubeloop run on 1M, 10M, 100M rows x 20 columns (local and S3), each run under a 4 GiB cgroup cap (BENCH_SCALE_SIZES=1M,10M)
	$(BIN)/python bench/bench_scale.py --sizes $(BENCH_SCALE_SIZES) --dir $(BENCH_SCALE_DIR) --json $(BENCH_SCALE_DIR)/results.json
