# syntax=docker/dockerfile:1
# The one kubeloop image: every pipeline step runs on it (KFP installs nothing at
# step start: install_kfp_package=False), and so does the predictor behind the
# `kubeloop` ServingRuntime (`python -m kubeloop.serving`).
#
#   make image                     # docker build, tagged with the package version
#   make image IMAGE_NAME=registry.example.com/kubeloop
#
# Reproducible: the dependencies come from requirements/lock.txt, exact versions
# with hashes, installed without resolving anything (--require-hashes --no-deps),
# so the image a pipeline names today is the image it gets next month.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: compilers and pip live here only ------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# For any locked dependency that has no wheel for this platform. Not version-pinned:
# the builder's compilers never reach the final image.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, in their own layer: a code change does not reinstall them.
COPY requirements/lock.txt requirements/lock.txt
RUN pip install --require-hashes --no-deps -r requirements/lock.txt

# Then kubeloop itself, with nothing resolved (its build backend is fetched for the
# build only and does not reach the venv).
COPY pyproject.toml README.md ./
COPY kubeloop ./kubeloop
COPY components ./components
COPY pipelines ./pipelines
RUN pip install --no-deps . \
 && pip check \
 && python -m pip uninstall --yes pip \
 && rm -rf /src

# --- final: the venv on a slim base, no compilers, no pip, no caches, not root ------
FROM ${PYTHON_IMAGE}

# KFP v2's launcher writes input artifacts under /gcs, /minio and /s3 at the root
# of the filesystem; they are created here, owned by the image's user, so steps
# run as that user without root.
RUN groupadd --gid 10001 kubeloop \
 && useradd --uid 10001 --gid 10001 --home-dir /home/kubeloop --create-home \
        --shell /usr/sbin/nologin kubeloop \
 && mkdir -p /gcs /minio /s3 \
 && chown 10001:10001 /gcs /minio /s3

COPY --from=builder /opt/venv /opt/venv

# The commit the code came from (`git describe --always --dirty`, passed by
# `make image`); every registered model records it in its lineage. Declared last
# so a new commit rebuilds only this layer.
ARG KUBELOOP_CODE_VERSION=unknown
ENV KUBELOOP_CODE_VERSION=${KUBELOOP_CODE_VERSION} \
    PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/home/kubeloop

# Numeric, so Kubernetes can verify runAsNonRoot; the ServingRuntime asks for the same.
USER 10001:10001
WORKDIR /home/kubeloop
EXPOSE 8080
CMD ["kubeloop", "--help"]
