# The one kubeloop image: every pipeline step runs on it (KFP installs nothing at
# step start: install_kfp_package=False), and so does the predictor behind the
# `kubeloop` ServingRuntime (`python -m kubeloop.serving`).
#
#   make image                                   # tagged with the package version
#   make image CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt   # behind a TLS-re-signing proxy
#   make base-image && make image                # no image registry at all (debootstrap base)
#
# Built with BuildKit (for the CA bundle's secret mount) through the builder's own
# Dockerfile frontend: no `# syntax=` line, so nothing is pulled to parse this file
# (Docker 20.10's built-in frontend has RUN --mount; `make image` passes
# --network host so a daemon without a bridge network can build).
#
# What a rebuild can and cannot change
# - Cannot: the Python packages (requirements/lock.txt: exact versions with hashes,
#   installed with --require-hashes --no-deps, nothing resolved);
#   kubeloop's own wheel (the build backend is pinned in the same lock and
#   pyproject.toml and used with --no-build-isolation); the default base
#   (python:3.11-slim-bookworm pinned by digest).
# - Can: the base when PYTHON_IMAGE names another one (`make base-image` builds one
#   from today's Debian bookworm packages, so its Debian patch releases follow the
#   mirror); the code commit recorded in KUBELOOP_CODE_VERSION.
# - The CA bundle is a build secret: mounted for the pip steps only, in no layer.

# python:3.11-slim-bookworm, pinned: bump the tag and the digest together.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

# --- builder: pip and the build backend live here only ----------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# The CA bundle, when one was passed (`--secret id=pip-ca,src=FILE`), is mounted
# at /run/secrets/pip-ca for one RUN at a time and pip is pointed at it.
# Dependencies first, in their own layer: a code change does not reinstall them.
# The locked build backend goes in first and every build runs without isolation,
# so the one sdist-only dependency (kfp-server-api, pure Python) is built by the
# pinned setuptools, not by whatever version an isolated build would download.
# No compiler is installed: a dependency that needed one would fail here, loudly.
COPY requirements/lock.txt requirements/lock.txt
RUN --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
 && awk '/^setuptools==/ {p = 1} p {print; if (!/\\$/) exit}' requirements/lock.txt > /tmp/backend.txt \
 && pip install --require-hashes --no-deps -r /tmp/backend.txt \
 && pip install --require-hashes --no-deps --no-build-isolation --use-pep517 -r requirements/lock.txt \
 && rm /tmp/backend.txt

# Then kubeloop itself: its wheel built by the locked backend, installed with
# nothing resolved. Then everything no step and not the predictor imports leaves
# the venv (measured: 762 MB before): the installers and build backend; kserve's
# unused dependencies pillow (image payloads) and grpcio-tools (protoc); every
# package's own test suite; pyarrow's C++ headers, Cython sources and its Flight
# (RPC) libraries, which nothing links (Substrait stays: libarrow_python links it).
# The image tests (tests/image) run the CLI, both pipelines, batch scoring and
# the predictor on what is left.
COPY pyproject.toml setup.py README.md ./
COPY kubeloop ./kubeloop
COPY components ./components
COPY pipelines ./pipelines
RUN pip install --no-deps --no-build-isolation --no-index . \
 && pip check \
 && python -m pip uninstall --yes pillow grpcio-tools setuptools pip \
 && cd /opt/venv/lib/python3.11/site-packages \
 && find . -depth -type d -name tests -exec rm -rf {} + \
 && rm -rf pyarrow/include pyarrow/src pyarrow/*flight* \
 && find . \( -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' -o -name '*.h' -o -name '*.cpp' \) -delete \
 && find /opt/venv/bin -name 'python-grpc-tools-protoc' -delete \
 && rm -rf /src

# --- final: the venv on the same base, no compilers, no pip, no caches, not root ----
FROM ${PYTHON_IMAGE}

# KFP v2's launcher writes input artifacts under /gcs, /minio and /s3 at the root
# of the filesystem; they are created here, owned by the image's user, so steps
# run as that user without root. The base's own installers go: the slim image's
# pip, or Debian's pip and setuptools wheels for ensurepip (python3-venv).
RUN groupadd --gid 10001 kubeloop \
 && useradd --uid 10001 --gid 10001 --home-dir /home/kubeloop --create-home \
        --shell /usr/sbin/nologin kubeloop \
 && mkdir -p /gcs /minio /s3 \
 && chown 10001:10001 /gcs /minio /s3 \
 && (python -m pip uninstall --yes pip setuptools wheel >/dev/null 2>&1 || true) \
 && rm -rf /usr/share/python-wheels /root/.cache /var/cache/apt/* /var/lib/apt/lists/*

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
