"""The wheel, not the source tree: what a non-editable install (the image) gets.

Every other test imports kubeloop from the editable install. Here the wheel is
built the way the image builds it, checked to hold every module of the tree, and
then installed into a fresh venv where the CLI, a pipeline run and the predictor
run with kubeloop imported from that install only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import tomllib
from helpers_cli import FAST_CONFIG, MODEL, TARGET, TIME_COLUMN
from serving_support import free_port, get, post, rows_of
from wheel_support import BUILD_FILES, REPO, TREES, build_wheel, source_files, wheel_files

from kubeloop.datagen import make_churn


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def test_wheel_holds_every_module_of_the_tree(wheel):
    files = wheel_files(wheel)
    missing = sorted(source_files() - files)
    assert not missing, f"modules of the source tree missing from {wheel.name}: {missing}"
    # Nothing installs at the top level except the kubeloop package (and its metadata).
    tops = {name.split("/")[0] for name in files}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"kubeloop"}
    entry_points = next(n for n in files if n.endswith(".dist-info/entry_points.txt"))
    with zipfile.ZipFile(wheel) as zf:
        assert "kubeloop = kubeloop.cli:main" in zf.read(entry_points).decode()


def test_subpackages_of_the_mapped_trees_are_discovered(tmp_path):
    """A package added later under components/ installs as kubeloop.components.<name>."""

    root = tmp_path / "tree"
    root.mkdir()
    for name in BUILD_FILES:
        shutil.copy2(REPO / name, root / name)
    for directory in TREES:
        (root / directory).mkdir()
        (root / directory / "__init__.py").write_text("")
    (root / "components" / "newstage").mkdir()
    (root / "components" / "newstage" / "__init__.py").write_text("")
    (root / "kubeloop" / "newsub").mkdir()
    (root / "kubeloop" / "newsub" / "__init__.py").write_text("")
    proc = subprocess.run([sys.executable, "setup.py", "--quiet", "egg_info", "--egg-base", str(tmp_path)],
                          cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    top = (tmp_path / "kubeloop.egg-info" / "SOURCES.txt").read_text()
    assert "components/newstage/__init__.py" in top
    assert "kubeloop/newsub/__init__.py" in top


def _requirement_pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        m = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)", line.strip())
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def test_build_backend_is_pinned_to_the_locked_versions():
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    declared = _requirement_pins(requires)
    assert set(declared) == {"setuptools"}, f"build-system.requires must pin it exactly: {requires}"
    build_in = _requirement_pins((REPO / "requirements" / "build.in").read_text().splitlines())
    locks = {lock: _requirement_pins((REPO / "requirements" / lock).read_text().splitlines())
             for lock in ("lock.txt", "lock-test.txt")}
    assert build_in == declared
    for lock, locked in locks.items():
        for name, version in declared.items():
            assert locked.get(name) == version, f"{name}: pyproject pins {version}, {lock} has {locked.get(name)}"


# --- a fresh venv holding the wheel --------------------------------------------------------


def _fresh_venv(root: Path, wheel: Path) -> Path:
    """A new venv with kubeloop installed from ``wheel`` (non-editable, --no-deps).

    Its dependencies are the test venv's, already installed from the same lock:
    a .pth line puts that site-packages after the venv's own. Only directories
    named in .pth files are added; the editable install's own .pth hook in there
    is not run, so kubeloop can come from nowhere but the wheel (checked below).
    """
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "zz-locked-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--disable-pip-version-check", str(wheel)], check=True, timeout=300)
    return venv


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KUBELOOP_REGISTRY")}


@pytest.mark.slow
def test_cli_pipeline_and_predictor_run_from_the_installed_wheel(wheel, tmp_path):
    venv = _fresh_venv(tmp_path, wheel)
    python, kubeloop = venv / "bin" / "python", venv / "bin" / "kubeloop"
    work = tmp_path / "work"
    work.mkdir()

    where = subprocess.run(
        [str(python), "-c", "import json, kubeloop, kubeloop.serving, kubeloop.components.train, "
         "kubeloop.pipelines.training, kubeloop.monitoring, kubeloop.commands, kubeloop.deploy; "
         "print(json.dumps({m: __import__('sys').modules[m].__file__ for m in "
         "['kubeloop', 'kubeloop.serving', 'kubeloop.components.train', 'kubeloop.pipelines.training']}))"],
        cwd=work, env=_env(), capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr
    venv_site = str(venv.resolve())
    for module, path in json.loads(where.stdout).items():
        assert path.startswith(venv_site), f"{module} imported from {path}, not from the wheel in {venv}"
        assert not path.startswith(str(REPO) + os.sep), f"{module} came from the source tree"

    help_ = subprocess.run([str(kubeloop), "--help"], cwd=work, env=_env(), capture_output=True, text=True,
                           timeout=120)
    assert help_.returncode == 0, help_.stderr
    for command in ("run", "serve", "predict", "compile", "canary", "monitor"):
        assert command in help_.stdout

    # A whole training pipeline (local runner, steps in subprocesses of this venv's Python).
    data = work / "churn.csv"
    make_churn(600, seed=3).to_csv(data, index=False)
    (work / "fast.yaml").write_text(FAST_CONFIG)
    registry = work / "registry"
    run = subprocess.run(
        [str(kubeloop), "run", "--data", str(data), "--target", TARGET, "--time-column", TIME_COLUMN,
         "--model-name", MODEL, "--registry", str(registry), "--config", str(work / "fast.yaml"), "--json"],
        cwd=work, env=_env(), capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    version = summary["version"]
    model_dir = registry / MODEL / "versions" / version / "model"
    assert (model_dir / "model.joblib").is_file()

    # Batch scoring from the wheel, then the predictor on the same rows.
    rows = make_churn(40, seed=11).drop(columns=[TARGET])
    rows_path = work / "rows.csv"
    rows.to_csv(rows_path, index=False)
    out = work / "scored.parquet"
    predict = subprocess.run(
        [str(kubeloop), "predict", "--model", f"{MODEL}@{version}", "--data", str(rows_path), "--out", str(out),
         "--registry", str(registry), "--json"], cwd=work, env=_env(), capture_output=True, text=True, timeout=300)
    assert predict.returncode == 0, predict.stderr
    batch = pd.read_parquet(out)
    assert len(batch) == len(rows)

    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [str(python), "-m", "kubeloop.serving", f"--model_name={MODEL}", f"--model_dir={model_dir}",
         f"--http_port={port}", "--enable_grpc=false"],
        cwd=work, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        status = 0
        while time.monotonic() < deadline and server.poll() is None:
            try:
                status, _ = get(url + "/v2/health/ready", timeout=2)
            except OSError:
                status = 0
            if status == 200:
                break
            time.sleep(0.2)
        assert status == 200, (tmp_path / "serve.log").read_text()
        features = [f["name"] for f in json.loads((model_dir / "kubeloop.json").read_text())["features"]]
        code, answer = post(f"{url}/v1/models/{MODEL}:predict", {"instances": rows_of(rows, features)})
        assert code == 200, answer
        assert [str(p) for p in answer["predictions"]] == [str(p) for p in batch["prediction"]]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
