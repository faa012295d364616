"""What a model was built with, and whether this process can trust loading it.

Lineage records the exact package versions, the BLAS library and kernel, the
thread settings and the seeds, so a model can be rebuilt and a difference
between two runs explained. A model is a pickle: loaded under other versions
of the libraries that define its classes, it may load and then predict
differently (or not load at all), so ``check_compatible`` compares the
versions a model records with the running ones before the model is trusted.

What can differ between machines with the same lock: the BLAS kernel OpenBLAS
picks for the CPU (SkylakeX, Haswell, ...) and the thread count change the last
bits of iterative fits, so metrics agree closely but not bit for bit, and a
decision on a near tie can go either way. On one machine, the same data, config
and seed give the same model bytes.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata as importlib_metadata
from typing import Any

from kubeloop.errors import UserError

# Everything recorded in lineage.
PACKAGES = (
    "kubeloop", "scikit-learn", "pandas", "numpy", "scipy", "pyarrow", "joblib",
    "threadpoolctl", "kfp", "kserve",
)
# The packages whose classes and array layouts a pickled model holds: another
# version of any of them may unpickle differently.
PICKLE_PACKAGES = ("scikit-learn", "numpy", "scipy", "joblib")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "OPENBLAS_CORETYPE")


class EnvironmentMismatch(UserError):
    """A model was saved under other library versions than the running ones."""


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def pickle_versions() -> dict[str, str]:
    """Versions of the packages a pickled model depends on (see PICKLE_PACKAGES)."""
    return package_versions(PICKLE_PACKAGES)


def native_libraries() -> list[dict[str, Any]]:
    """The BLAS and OpenMP libraries in use, with kernel and thread count."""
    # threadpoolctl sees only libraries already loaded: numpy brings its BLAS.
    import numpy  # noqa: F401
    from threadpoolctl import threadpool_info

    keep = ("user_api", "internal_api", "version", "architecture", "num_threads",
            "threading_layer")
    return [{k: lib.get(k) for k in keep if lib.get(k) is not None} for lib in threadpool_info()]


def runtime_environment() -> dict[str, Any]:
    """Everything about this process that can change a model's bytes or scores."""
    return {
        "packages": package_versions(),
        "platform": {"machine": platform.machine(), "system": platform.system(),
                     "cpu_count": os.cpu_count()},
        "native_libraries": native_libraries(),
        "thread_variables": {k: os.environ[k] for k in THREAD_VARIABLES if k in os.environ},
    }


def code_version() -> str:
    """The commit the code came from: baked into the image as KUBELOOP_CODE_VERSION,
    else read from the checkout, else the package version."""
    env = os.environ.get("KUBELOOP_CODE_VERSION")
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(
            ["git", "-C", here, "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        )
        dirty = subprocess.run(
            ["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        )
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "kubeloop-" + package_versions(("kubeloop",))["kubeloop"]


def mismatches(recorded: dict[str, str] | None, running: dict[str, str] | None = None) -> list[str]:
    """One line per pickle-relevant package whose recorded version differs."""
    if not recorded:
        return []
    running = running or pickle_versions()
    out = []
    for name in PICKLE_PACKAGES:
        saved, now = recorded.get(name), running.get(name)
        if saved and now and saved != now:
            out.append(f"{name} {saved} when saved, {now} here")
    return out


def check_compatible(recorded: dict[str, str] | None, *, what: str,
                     running: dict[str, str] | None = None) -> None:
    """Raise EnvironmentMismatch naming each package whose version differs.

    ``what`` names the model (``"churn v3"``). Models saved before versions were
    recorded pass: there is nothing to compare.
    """
    found = mismatches(recorded, running)
    if found:
        raise EnvironmentMismatch(
            f"{what} was saved under other library versions ({'; '.join(found)}); its "
            "predictions cannot be trusted here. Load it with the image or lock it was "
            "built with (its lineage.json lists every version), or retrain it here."
        )
