"""Lineage's environment record, and models refused under other library versions."""

from __future__ import annotations

import json

import pytest

from kubeloop import environment
from kubeloop.environment import (
    PICKLE_PACKAGES,
    EnvironmentMismatch,
    check_compatible,
    mismatches,
    pickle_versions,
    runtime_environment,
)
from kubeloop.errors import UserError


def test_runtime_environment_names_versions_blas_and_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    env = runtime_environment()
    assert json.loads(json.dumps(env)) == env  # plain JSON, as lineage stores it
    import numpy
    import sklearn

    assert env["packages"]["numpy"] == numpy.__version__
    assert env["packages"]["scikit-learn"] == sklearn.__version__
    assert env["thread_variables"]["OMP_NUM_THREADS"] == "3"
    blas = [lib for lib in env["native_libraries"] if lib.get("user_api") == "blas"]
    assert blas and blas[0]["num_threads"] >= 1 and blas[0].get("internal_api")


@pytest.mark.parametrize(
    "recorded,expected",
    [
        (None, []),  # saved before versions were recorded
        ({}, []),
        ("same", []),
        ({"scikit-learn": "0.0.1"}, ["scikit-learn 0.0.1 when saved"]),
        ({"numpy": "0.0.1", "joblib": "0.0.2"}, ["numpy 0.0.1 when saved", "joblib 0.0.2 when saved"]),
        ({"pandas": "0.0.1"}, []),  # not part of the pickle
    ],
)
def test_mismatches_name_each_package_with_both_versions(recorded, expected):
    if recorded == "same":
        recorded = pickle_versions()
    found = mismatches(recorded)
    assert len(found) == len(expected)
    for line, start in zip(found, expected, strict=True):
        name = start.split()[0]
        assert line.startswith(start) and f"{pickle_versions()[name]} here" in line


def test_check_compatible_is_a_user_error_naming_the_model_and_versions():
    with pytest.raises(EnvironmentMismatch) as err:
        check_compatible({"scikit-learn": "1.0.0"}, what="churn v3",
                         running={"scikit-learn": "1.9.1"})
    assert isinstance(err.value, UserError)
    text = str(err.value)
    assert "churn v3" in text and "1.0.0" in text and "1.9.1" in text
    check_compatible(pickle_versions(), what="churn v3")  # the same versions pass


def test_pickle_packages_are_recorded_by_name():
    assert set(pickle_versions()) == {"python", *PICKLE_PACKAGES}


def test_code_version_falls_back_to_the_package_without_git(monkeypatch):
    monkeypatch.delenv("KUBELOOP_CODE_VERSION", raising=False)
    monkeypatch.setenv("PATH", "")
    assert environment.code_version().startswith("kubeloop-")
