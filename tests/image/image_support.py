"""Run the project image the way Kubernetes, KServe and KFP run it.

A pod spec's container (command, args, env, securityContext, volumes) becomes
``docker run`` flags here, read from the manifests rather than written into the
tests. Every container uses the host's network: the Docker daemon on CI machines
runs without a bridge, and the loopback S3 server is on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER = os.environ.get("KUBELOOP_DOCKER") or "docker"
IMAGE = os.environ.get("KUBELOOP_TEST_IMAGE", "")
# A pod's terminationGracePeriodSeconds when the spec sets none (Kubernetes' default).
DEFAULT_GRACE_SECONDS = 30
# KServe's storage initializer runs as this user (USER 1000 in kserve's
# storage-initializer.Dockerfile) and downloads with boto3 under the default
# umask: files 0644, directories 0755, owned by 1000, none by the predictor's user.
STORAGE_INITIALIZER_UID = 1000
MODEL_FILE_MODE = 0o644
MODEL_DIR_MODE = 0o755


def skip_reason() -> str | None:
    """Why the image tests cannot run here, or None. `make test-image` (after
    `make image`) names the image in KUBELOOP_TEST_IMAGE; without it the tests are
    skipped, so `make test` stays what it is."""
    if not IMAGE:
        return "no image to test: make image, then make test-image (KUBELOOP_TEST_IMAGE)"
    if shutil.which(DOCKER) is None:
        return f"{DOCKER} not found"
    if subprocess.run([DOCKER, "image", "inspect", IMAGE], capture_output=True).returncode != 0:
        return f"image {IMAGE} is not built (make image)"
    return None


def docker(*args: str, timeout: float = 900, check: bool = True, input: str | None = None
           ) -> subprocess.CompletedProcess:
    proc = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout, input=input)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} ... exited {proc.returncode}:\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def image_size_bytes(image: str) -> int:
    return int(docker("image", "inspect", "-f", "{{.Size}}", image).stdout.strip())


def image_config(image: str) -> dict[str, Any]:
    return json.loads(docker("image", "inspect", image).stdout)[0]["Config"]


# --- a Kubernetes container spec as docker flags -------------------------------------------

_HANDLED_SECURITY = {"runAsNonRoot", "runAsUser", "runAsGroup", "allowPrivilegeEscalation",
                     "readOnlyRootFilesystem", "capabilities", "seccompProfile", "privileged"}


def security_flags(sc: Mapping[str, Any], image_user: str) -> list[str]:
    """``docker run`` flags enforcing a container securityContext.

    A field this does not know is an error, so a new setting in the manifest
    can never be silently left out of the test.
    """
    unknown = set(sc) - _HANDLED_SECURITY
    if unknown:
        raise ValueError(f"securityContext fields with no docker equivalent here: {sorted(unknown)}")
    flags: list[str] = []
    uid = sc.get("runAsUser")
    if uid is not None:
        gid = sc.get("runAsGroup", uid)
        flags += ["--user", f"{uid}:{gid}"]
    if sc.get("runAsNonRoot"):
        # The kubelet refuses to start a container whose user is root (or not numeric).
        effective = str(uid) if uid is not None else image_user.split(":")[0]
        if not effective.isdigit() or int(effective) == 0:
            raise ValueError(f"runAsNonRoot with user {effective!r}: the kubelet would refuse this container")
    if sc.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    caps = sc.get("capabilities") or {}
    flags += [a for cap in caps.get("drop", []) for a in ("--cap-drop", cap)]
    flags += [a for cap in caps.get("add", []) for a in ("--cap-add", cap)]
    if sc.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    if sc.get("privileged"):
        flags.append("--privileged")
    seccomp = (sc.get("seccompProfile") or {}).get("type")
    if seccomp == "Unconfined":
        flags += ["--security-opt", "seccomp=unconfined"]
    elif seccomp not in (None, "RuntimeDefault"):
        raise ValueError(f"seccompProfile {seccomp!r} has no docker equivalent here")
    return flags


def container_env(container: Mapping[str, Any], secrets: Mapping[str, Mapping[str, str]],
                  extra: list[Mapping[str, Any]] = ()) -> dict[str, str]:
    """The container's environment as the kubelet builds it: literal values, and
    ``secretKeyRef`` values from ``secrets`` (Secret name -> data). ``extra`` is
    env a higher object adds (an InferenceService's ``predictor.model.env``); it
    wins over the runtime's, as in KServe's merge."""
    env: dict[str, str] = {}
    for item in [*container.get("env", []), *extra]:
        name = item["name"]
        if "value" in item:
            env[name] = str(item["value"])
        elif "secretKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["secretKeyRef"]
            env[name] = secrets[ref["name"]][ref["key"]]
        else:
            raise ValueError(f"env {name}: only value and secretKeyRef are handled here, got {item}")
    return env


def secret_names(*envs: list[Mapping[str, Any]]) -> set[str]:
    """The Secrets whose keys the given env lists read (``secretKeyRef``): a test
    stands in for each with its own credentials instead of copying the names."""
    return {item["valueFrom"]["secretKeyRef"]["name"]
            for env in envs for item in env if "secretKeyRef" in item.get("valueFrom", {})}


def memory_flag(quantity: str) -> str:
    """A Kubernetes memory quantity (2Gi, 512Mi) as docker's --memory value (bytes)."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if quantity.endswith(suffix):
            return str(int(float(quantity[: -len(suffix)]) * factor))
    return str(int(quantity))


def cpu_flag(quantity: str) -> str:
    return str(int(quantity[:-1]) / 1000) if quantity.endswith("m") else str(float(quantity))


def serving_runtime() -> dict[str, Any]:
    return yaml.safe_load((REPO / "manifests" / "base" / "servingruntime.yaml").read_text())


def example_inferenceservice() -> dict[str, Any]:
    return yaml.safe_load((REPO / "manifests" / "examples" / "inferenceservice.yaml").read_text())


def kserve_args(args: list[str], model_name: str) -> list[str]:
    """The runtime's args with KServe's template fields filled in."""
    return [a.replace("{{.Name}}", model_name) for a in args]


def place_like_storage_initializer(src: Path, dst: Path) -> Path:
    """Copy a model/ folder with the owner and modes KServe's storage initializer leaves."""
    dst.mkdir(parents=True)
    os.chmod(dst, 0o777)  # the emptyDir the initializer writes into
    for path in sorted(src.rglob("*")):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir()
            os.chmod(target, MODEL_DIR_MODE)
        else:
            target.write_bytes(path.read_bytes())
            os.chmod(target, MODEL_FILE_MODE)
        os.chown(target, STORAGE_INITIALIZER_UID, STORAGE_INITIALIZER_UID)
    return dst
