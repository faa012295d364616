"""The wheel a cluster gets, built from the files the image build copies.

``build_wheel`` copies the build inputs (pyproject.toml, setup.py, README.md and the
three source trees, as the Dockerfile does) into a scratch directory and builds
there, so the source tree gets no build/ or egg-info and the wheel cannot pick up
anything the image would not have. ``source_files`` is what the wheel must hold.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Source directory -> import path it installs as (pyproject.toml's package-dir).
TREES = {"kubeloop": "kubeloop", "components": "kubeloop.components", "pipelines": "kubeloop.pipelines"}
BUILD_FILES = ("pyproject.toml", "setup.py", "README.md")


def source_files() -> set[str]:
    """Every module (and data file) of the source tree, as its path in the wheel."""
    found = set()
    for directory, package in TREES.items():
        for path in (REPO / directory).rglob("*"):
            rel = path.relative_to(REPO / directory)
            if path.is_dir() or "__pycache__" in rel.parts or path.suffix == ".pyc":
                continue
            found.add("/".join([*package.split("."), *rel.parts]))
    return found


def build_wheel(out: Path) -> Path:
    """Build kubeloop's wheel with the locked backend (no isolation, no download)."""
    src = out / "src"
    src.mkdir(parents=True)
    for name in BUILD_FILES:
        shutil.copy2(REPO / name, src / name)
    for directory in TREES:
        shutil.copytree(REPO / directory, src / directory,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = out / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--quiet", "-w", str(dist), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"wheel build failed:\n{proc.stdout}\n{proc.stderr}"
    wheels = sorted(dist.glob("kubeloop-*.whl"))
    assert len(wheels) == 1, f"expected one kubeloop wheel, got {wheels}"
    return wheels[0]


def wheel_files(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())
