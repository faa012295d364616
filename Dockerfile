# The one image every pipeline step runs on: kubeloop and its pinned dependencies,
# so KFP installs nothing at step start (install_kfp_package=False).
#   docker build -t registry.example.com/kubeloop:0.1.0 .
#   make compile IMAGE=registry.example.com/kubeloop:0.1.0
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /opt/kubeloop
COPY pyproject.toml README.md ./
COPY kubeloop ./kubeloop
COPY components ./components
COPY pipelines ./pipelines
RUN pip install . && useradd --uid 1000 --create-home kubeloop
USER 1000
