"""Real public datasets written the way real exports look, and runs of ``kubeloop run``.

The datasets ship inside installed packages (scikit-learn's bundled CSVs, and
statsmodels' when it is installed), so nothing is fetched. They are written as
people publish them: pandas' ``to_csv`` with its index (an unnamed first column),
R's ``write.csv`` (every header quoted, the first one empty, row names "1".."n"
quoted), gzip-compressed, and Parquet with a non-default index.
"""

from __future__ import annotations

import csv
import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from helpers_cli import FAST_CONFIG, run_cli

# --------------------------------------------------------------------------- datasets


def breast_cancer() -> pd.DataFrame:
    """569 rows, 30 numeric features, target ``diagnosis`` (malignant/benign)."""
    from sklearn.datasets import load_breast_cancer

    b = load_breast_cancer(as_frame=True)
    df = b.frame.drop(columns=["target"])
    df["diagnosis"] = np.where(b.target == 0, "malignant", "benign")
    return df


def wine() -> pd.DataFrame:
    """178 rows, 13 numeric features, target ``cultivar`` (three classes)."""
    from sklearn.datasets import load_wine

    w = load_wine(as_frame=True)
    df = w.frame.drop(columns=["target"])
    df["cultivar"] = [f"class_{int(t)}" for t in w.target]
    return df


def diabetes() -> pd.DataFrame:
    """442 rows, 10 numeric features, target ``progression`` (regression)."""
    from sklearn.datasets import load_diabetes

    d = load_diabetes(as_frame=True, scaled=False)
    return d.frame.rename(columns={"target": "progression"})


def iris() -> pd.DataFrame:
    """150 rows, the classic; target ``species``."""
    from sklearn.datasets import load_iris

    i = load_iris(as_frame=True)
    df = i.frame.drop(columns=["target"])
    df["species"] = [i.target_names[t] for t in i.target]
    return df


def grunfeld() -> pd.DataFrame | None:
    """statsmodels' Grunfeld investment panel (220 rows, a numeric ``year`` 1935-1954),
    or None when statsmodels is not installed."""
    try:
        from statsmodels.datasets import grunfeld as g
    except ImportError:
        return None
    return g.load_pandas().data


def fair() -> pd.DataFrame | None:
    """statsmodels' Fair affairs survey (6,366 rows; a noisy binary target ``had_affair``),
    or None when statsmodels is not installed."""
    try:
        from statsmodels.datasets import fair as f
    except ImportError:
        return None
    df = f.load_pandas().data.copy()
    df["had_affair"] = np.where(df.pop("affairs") > 0, "yes", "no")
    return df


def anes96() -> pd.DataFrame | None:
    """statsmodels' 1996 American National Election Study extract (944 rows; target
    ``vote``: Dole or Clinton), or None when statsmodels is not installed."""
    try:
        from statsmodels.datasets import anes96 as a
    except ImportError:
        return None
    df = a.load_pandas().data.copy()
    df["vote"] = np.where(df["vote"] > 0, "dole", "clinton")
    return df


# --------------------------------------------------------------------------- exports


def to_csv_pandas(df: pd.DataFrame, path: Path) -> Path:
    """pandas' default: the index as an unnamed first column (header starts with ``,``)."""
    df.to_csv(path)
    return path


def to_csv_r(df: pd.DataFrame, path: Path) -> Path:
    """R's ``write.csv``: every header quoted, the first one ``""``, row names "1".."n"
    quoted, strings quoted, numbers bare, ``NA`` for missing values."""
    with open(path, "w", newline="") as f:
        f.write(",".join(['""'] + [f'"{c}"' for c in df.columns]) + "\n")
        for i, row in enumerate(df.itertuples(index=False), start=1):
            cells = [f'"{i}"']
            for v in row:
                if v is None or (isinstance(v, float) and np.isnan(v)):
                    cells.append("NA")
                elif isinstance(v, str):
                    cells.append('"' + v.replace('"', '""') + '"')
                else:
                    cells.append(format(v, ".15g"))  # R prints 1935, not 1935.0
            f.write(",".join(cells) + "\n")
    return path


def to_csv_gz(df: pd.DataFrame, path: Path) -> Path:
    """pandas' ``to_csv`` with its index, gzip-compressed (``.csv.gz``)."""
    with gzip.open(path, "wt", newline="") as f:
        df.to_csv(f)
    return path


def to_parquet_with_index(df: pd.DataFrame, path: Path) -> Path:
    """Parquet of a filtered frame: pandas stores a non-default index as a column
    (``__index_level_0__``)."""
    df.to_parquet(path)
    return path


def header(path: Path) -> list[str]:
    with open(path, newline="") as f:
        return next(csv.reader(f))


# --------------------------------------------------------------------------- runs

FOREST_CONFIG = """\
train:
  families: [random_forest]
  search_iterations: 1
evaluation:
  stability_seeds: 0
"""


@dataclass
class Run:
    """One ``kubeloop run --json``: what it printed and where its version lives."""

    proc: Any
    summary: dict[str, Any]
    registry: Path
    model: str

    @property
    def ok(self) -> bool:
        return self.proc.returncode == 0

    def version_dir(self) -> Path:
        return self.registry / self.model / "versions" / self.summary["version"]

    def json_file(self, rel: str) -> Any:
        return json.loads((self.version_dir() / rel).read_text())

    def text_file(self, rel: str) -> str:
        return (self.version_dir() / rel).read_text()


def kubeloop_run(
    data: Path,
    *,
    target: str,
    registry: Path,
    model: str,
    cwd: Path,
    config: str = FAST_CONFIG,
    extra: tuple[str, ...] = (),
) -> Run:
    """``kubeloop run --json`` on ``data`` as a user types it; the summary parsed when
    stdout holds one JSON document."""
    cfg = cwd / f"{model}-{len(list(cwd.glob('*.yaml')))}.yaml"
    cfg.write_text(config)
    args = [
        "run", "--data", str(data), "--target", target, "--model-name", model,
        "--registry", str(registry), "--config", str(cfg), "--json", *extra,
    ]  # fmt: skip
    proc = run_cli(args, cwd=cwd)
    try:
        summary = json.loads(proc.stdout) if proc.stdout.strip() else {}
    except json.JSONDecodeError:
        summary = {}
    return Run(proc, summary, registry, model)


def failure(run: Run) -> str:
    """What a failed run printed, for an assertion message."""
    return f"exit {run.proc.returncode}\nstderr (tail):\n{run.proc.stderr[-3000:]}"


def feature_names(run: Run) -> list[str]:
    """The input columns the registered model takes (``model/kubeloop.json``)."""
    meta = run.json_file("model/kubeloop.json")
    feats = meta.get("features")
    if isinstance(feats, dict):
        return list(feats)
    return [f["name"] if isinstance(f, dict) else f for f in feats]


def schema_roles(run: Run) -> dict[str, str]:
    """Column name -> role in the stored ``schema.json``."""
    schema = run.json_file("schema.json")
    cols = schema["columns"]
    if isinstance(cols, dict):
        return {name: c.get("role", "") for name, c in cols.items()}
    return {c["name"]: c.get("role", "") for c in cols}


def validation_report_text(run: Run) -> str:
    """The Markdown validation report stored with the version."""
    return run.text_file("reports/validation.md")


def champion_rows_at_the_gate(
    data: Path, challenger: Run, champion: Run, split: dict[str, Any]
) -> pd.DataFrame:
    """The test rows of ``challenger``'s run that ``champion`` never trained or validated
    on, rebuilt outside the pipeline: the data ingested and split again with the stored
    schema and the run's split settings, minus the rows whose fingerprints the champion's
    version stores."""
    from kubeloop.components.ingest import ingest
    from kubeloop.components.split import split_dataset
    from kubeloop.config import SplitConfig
    from kubeloop.fingerprints import FingerprintSet

    schema = challenger.json_file("schema.json")
    df, _ = ingest(data, keep={schema["target"]})
    test = split_dataset(df, schema, SplitConfig(**split)).test
    test = test[test[schema["target"]].notna()]
    seen = FingerprintSet.from_bytes(
        (champion.version_dir() / "rows" / "fingerprints.npz").read_bytes()
    ).contains_rows(test)
    return test[~seen]
