"""Package discovery for the one layout pyproject.toml cannot express.

kubeloop's lifecycle stages live at the top of the repository (components/,
pipelines/) and install as kubeloop.components and kubeloop.pipelines
([tool.setuptools] package-dir). setuptools' `packages.find` names packages by
their directory, so it would install those two as top-level packages; here each
tree is discovered and named under its mapped import path. Everything else is
in pyproject.toml.
"""

from setuptools import find_packages, setup

MAPPED = {"kubeloop.components": "components", "kubeloop.pipelines": "pipelines"}

packages = find_packages(include=["kubeloop", "kubeloop.*"])
for name, directory in MAPPED.items():
    packages += [name] + [f"{name}.{sub}" for sub in find_packages(directory)]

setup(packages=sorted(packages))
