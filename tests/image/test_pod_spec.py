"""The pod-spec-to-docker translation the image tests rely on (no Docker needed).

If it dropped a field, the image tests would run the predictor more loosely than
the kubelet does and still pass; so every field maps, or is refused.
"""

from __future__ import annotations

import pytest
from image_support import (
    container_env,
    cpu_flag,
    kserve_args,
    memory_flag,
    secret_names,
    security_flags,
    serving_runtime,
)


@pytest.mark.parametrize(
    ("sc", "expected"),
    [
        ({}, []),
        ({"runAsUser": 10001}, ["--user", "10001:10001"]),
        ({"runAsUser": 10001, "runAsGroup": 20002}, ["--user", "10001:20002"]),
        ({"readOnlyRootFilesystem": True}, ["--read-only"]),
        ({"readOnlyRootFilesystem": False}, []),
        ({"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}},
         ["--cap-drop", "ALL", "--cap-add", "NET_BIND_SERVICE"]),
        ({"allowPrivilegeEscalation": False}, ["--security-opt", "no-new-privileges"]),
        ({"allowPrivilegeEscalation": True}, []),
        ({"seccompProfile": {"type": "RuntimeDefault"}}, []),  # docker's default profile
        ({"seccompProfile": {"type": "Unconfined"}}, ["--security-opt", "seccomp=unconfined"]),
        ({"runAsNonRoot": True}, []),  # the image's own user (10001) is not root
    ],
)
def test_security_context_maps_to_docker_flags(sc, expected):
    assert security_flags(sc, image_user="10001:10001") == expected


@pytest.mark.parametrize(
    ("sc", "image_user", "message"),
    [
        ({"runAsNonRoot": True}, "", "kubelet would refuse"),
        ({"runAsNonRoot": True}, "root", "kubelet would refuse"),
        ({"runAsNonRoot": True, "runAsUser": 0}, "10001", "kubelet would refuse"),
        ({"seLinuxOptions": {"level": "s0"}}, "10001", "no docker equivalent"),
        ({"seccompProfile": {"type": "Localhost"}}, "10001", "no docker equivalent"),
    ],
)
def test_security_context_the_test_cannot_honour_is_refused(sc, image_user, message):
    with pytest.raises(ValueError, match=message):
        security_flags(sc, image_user=image_user)


def test_env_from_values_secrets_and_the_inferenceservice():
    container = {"env": [
        {"name": "A", "value": "1"},
        {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "AWS_ACCESS_KEY_ID"}}},
        {"name": "ROLE", "value": "primary"},
    ]}
    env = container_env(container, {"s3": {"AWS_ACCESS_KEY_ID": "k"}}, extra=[{"name": "ROLE", "value": "canary"}])
    assert env == {"A": "1", "KEY": "k", "ROLE": "canary"}
    with pytest.raises(KeyError):
        container_env(container, {"other": {}})
    with pytest.raises(ValueError, match="only value and secretKeyRef"):
        container_env({"env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}, {})


@pytest.mark.parametrize(("quantity", "flag"), [("2Gi", str(2 * 2**30)), ("512Mi", str(512 * 2**20)),
                                                ("1G", "1000000000"), ("1024", "1024")])
def test_memory_quantities(quantity, flag):
    assert memory_flag(quantity) == flag


@pytest.mark.parametrize(("quantity", "flag"), [("1", "1.0"), ("500m", "0.5"), ("2", "2.0")])
def test_cpu_quantities(quantity, flag):
    assert cpu_flag(quantity) == flag


def test_the_serving_runtime_is_one_the_harness_can_run():
    """Every field of the runtime's container is one the image test honours."""
    (container,) = serving_runtime()["spec"]["containers"]
    assert set(container) <= {"name", "image", "command", "args", "env", "resources", "securityContext",
                              "volumeMounts"}
    flags = security_flags(container["securityContext"], image_user="10001:10001")
    assert "--read-only" in flags and "--user" in flags
    assert any(a.startswith("--model_name=churn") for a in kserve_args(container["args"], "churn"))
    secrets = {name: {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"} for name in secret_names(container["env"])}
    assert secrets, "the runtime reads its S3 keys from a Secret"
    env = container_env(container, secrets)
    assert env["HOME"] == "/tmp" and env["AWS_SECRET_ACCESS_KEY"] == "b"
