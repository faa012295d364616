"""Shared pieces of the command-level tests (test_cli.py, test_pipeline.py).

``kubeloop run`` is run as the installed command in a subprocess, the way a user
runs it: exit code, stdout and stderr are what is checked. One good run on a
small churn table is made once per test process (``good_churn_run``); tests that
need a registry with a production model copy its registry directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from kubeloop.datagen import make_churn

MODEL = "churn"
TARGET = "churned"
TIME_COLUMN = "signup_date"
GOOD_ROWS = 800

# One cheap family and no stability refits: a run on ~1k rows takes seconds.
FAST_CONFIG = """\
train:
  families: [linear]
  search_iterations: 1
evaluation:
  stability_seeds: 0
"""

# Stage names as the steps report them, in pipeline order, with FAST_CONFIG.
PROGRESS_STAGES = (
    "settings",
    "ingest",
    "validate",
    "split",
    "features",
    "baseline",
    "train linear",
    "select",
    "evaluate",
    "gate",
    "register",
)

RUN_TIMEOUT = 600


def kubeloop_command() -> list[str]:
    """The installed ``kubeloop`` script next to this Python, else ``python -m``."""
    script = Path(sys.executable).with_name("kubeloop")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "kubeloop.cli"]


def run_cli(
    args: list[str], cwd: Path, *, timeout: float = RUN_TIMEOUT
) -> subprocess.CompletedProcess:
    """``kubeloop ARGS`` in ``cwd``; stdout and stderr captured as text."""
    env = dict(os.environ)
    env.pop("KUBELOOP_REGISTRY", None)
    return subprocess.run(
        kubeloop_command() + list(args),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_config(path: Path, extra: str = "") -> Path:
    path.write_text(FAST_CONFIG + extra)
    return path


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    df.to_csv(path, index=False)
    return path


def run_args(data: Path, registry: Path, config: Path, *extra: str) -> list[str]:
    """The arguments of a churn run with the fast config and a JSON summary."""
    return [
        "run",
        "--data", str(data),
        "--target", TARGET,
        "--time-column", TIME_COLUMN,
        "--model-name", MODEL,
        "--registry", str(registry),
        "--config", str(config),
        "--json",
        *extra,
    ]  # fmt: skip


def tree_digest(root: Path) -> dict[str, str]:
    """Every file and directory under ``root`` with the sha256 of its bytes.

    Directories are listed too (as "dir"), so a run that only creates an empty
    directory in the registry still shows up as a change.
    """
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


_PROGRESS_LINE = re.compile(r"^  (\S.*?)\s+\d+\.\ds  ")


def progress_lines(stderr: str) -> list[str]:
    """The stage names of the progress lines in a run's stderr, in order."""
    found = (_PROGRESS_LINE.match(line) for line in stderr.splitlines())
    return [m.group(1) for m in found if m]


@dataclass
class GoodRun:
    """A first run on an empty registry: its data, registry and what it printed."""

    root: Path
    data: Path
    registry: Path
    config: Path
    proc: subprocess.CompletedProcess
    summary: dict[str, Any]


_GOOD_RUN: GoodRun | None = None


def good_churn_run(tmp_path_factory: Any) -> GoodRun:
    """The first churn run (``GOOD_ROWS`` rows, seed 0), made once per process.

    Its registry holds ``churn`` v1 as production. Callers must not change it;
    copy it with ``shutil.copytree`` first.
    """
    global _GOOD_RUN
    if _GOOD_RUN is None:
        root = tmp_path_factory.mktemp("good-run")
        data = write_csv(make_churn(GOOD_ROWS, seed=0), root / "churn.csv")
        config = write_config(root / "fast.yaml")
        registry = root / "registry"
        proc = run_cli(run_args(data, registry, config), cwd=root)
        assert proc.returncode == 0, f"the good run failed:\n{proc.stderr}"
        _GOOD_RUN = GoodRun(root, data, registry, config, proc, json.loads(proc.stdout))
    return _GOOD_RUN


def copy_registry(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
