"""Validation of a Parquet file read one column at a time (``validate_parquet``, what
the pipeline step runs): the same answers as from the whole frame, in the memory of
one column and the row hashes."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import test_validate as frame_tests
from test_validate import *  # noqa: F403  (every frame test runs again through a file)
from test_validate import CASES, CFG, KW, base, ref_of, run_case

from kubeloop.components.validate import validate, validate_parquet
from kubeloop.components.validate.table import RowHashes
from kubeloop.tables import write_parquet

# Frames that no Parquet file can hold: their tests stay frame-only.
_FRAME_ONLY = {
    "test_bad_dataset_table[duplicate-column-names]": "Parquet column names are unique",
    "test_bad_dataset_table[non-text-column-name]": "Parquet column names are text",
}
_files = itertools.count()


@pytest.fixture(autouse=True)
def through_parquet(request, monkeypatch, tmp_path):
    """Every ``validate`` call of the frame tests writes its frame as Parquet and
    validates the file instead."""
    if request.node.name in _FRAME_ONLY:
        pytest.skip(_FRAME_ONLY[request.node.name])

    def validate_via_file(df, **kwargs):
        path = tmp_path / f"data-{next(_files)}.parquet"
        write_parquet(df, path)
        return validate_parquet(path, **kwargs)

    monkeypatch.setattr(frame_tests, "validate", validate_via_file)


def _as_json(result):
    return json.loads(json.dumps(
        {"anomalies": [a.to_dict() for a in result.anomalies], "schema": result.schema,
         "task": result.task},
        default=str,
    ))


@pytest.mark.parametrize(
    "case,mutate,reference_from,kwargs",
    [c[:4] for c in CASES if f"test_bad_dataset_table[{c[0]}]" not in _FRAME_ONLY],
    ids=[c[0] for c in CASES if f"test_bad_dataset_table[{c[0]}]" not in _FRAME_ONLY],
)
def test_a_file_gives_what_its_frame_gives(case, mutate, reference_from, kwargs, tmp_path):
    df = mutate(base())
    reference = ref_of(reference_from(base())) if reference_from is not None else None
    args = {**KW, "cfg": CFG, "reference": reference, **kwargs}
    path = write_parquet(df, tmp_path / "data.parquet")
    from kubeloop.tables import read_parquet

    # The frame as the file holds it (Parquet may widen a dtype), so both see one table.
    assert _as_json(validate_parquet(path, **args)) == _as_json(validate(read_parquet(path), **args))


def test_the_table_cases_really_go_through_a_file(monkeypatch):
    seen = []
    import kubeloop.components.validate.step as step

    real = step.scan_parquet
    monkeypatch.setattr(step, "scan_parquet", lambda *a, **k: seen.append(a[0]) or real(*a, **k))
    run_case(lambda df: df, None, {})
    assert len(seen) == 1 and str(seen[0]).endswith(".parquet")


def test_a_folder_of_files_is_one_table(tmp_path):
    df = base(n=400)
    (tmp_path / "parts").mkdir()
    write_parquet(df.iloc[:150], tmp_path / "parts" / "a.parquet")
    write_parquet(df.iloc[150:], tmp_path / "parts" / "b.parquet")
    whole = write_parquet(df, tmp_path / "whole.parquet")
    folder = validate_parquet(tmp_path / "parts", cfg=CFG, **KW)
    assert folder.schema["n_rows"] == 400
    assert _as_json(folder) == _as_json(validate_parquet(whole, cfg=CFG, **KW))


def test_row_hashes_count_what_duplicated_counts():
    rng = np.random.default_rng(3)
    df = pd.DataFrame({
        "a": rng.integers(0, 3, 2000),
        "b": rng.choice(["x", "y"], 2000),
        "c": rng.integers(0, 2, 2000).astype(float),
    })
    df.loc[5, "c"] = np.nan
    df.loc[6, "c"] = np.nan
    hashes = RowHashes()
    for c in df.columns:
        hashes.add(df[c])
    assert hashes.n_duplicates() == int(df.duplicated().sum()) > 0


def test_row_hashes_tell_rows_that_differ_only_in_column_order():
    # (1, 2) and (2, 1): a plain XOR of column hashes would call them equal.
    hashes = RowHashes()
    hashes.add(pd.Series([1, 2]))
    hashes.add(pd.Series([2, 1]))
    assert hashes.n_duplicates() == 0


def test_row_hashes_take_unhashable_values():
    hashes = RowHashes()
    hashes.add(pd.Series([[1], [1], [2]], dtype=object))
    assert hashes.n_duplicates() == 1


def test_a_missing_file_is_a_clear_error(tmp_path):
    from kubeloop.tables import DataError

    with pytest.raises(DataError, match="file not found"):
        validate_parquet(tmp_path / "nope.parquet", cfg=CFG, **KW)


_MEMORY_PROBE = textwrap.dedent("""
    import sys
    from kubeloop.components.validate import validate, validate_parquet
    from kubeloop.config import ValidationConfig
    from kubeloop.tables import read_parquet
    def peak_kib():
        # VmHWM belongs to this process's own address space (ru_maxrss can carry the
        # parent's peak over fork and exec).
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    path, how = sys.argv[1], sys.argv[2]
    start = peak_kib()
    kw = dict(target="y", cfg=ValidationConfig())
    if how == "frame":
        validate(read_parquet(path), **kw)
    else:
        validate_parquet(path, **kw)
    print((peak_kib() - start) / 1024)
""")


def _growth_mib(path, how):
    out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(path), how],
                         check=True, capture_output=True, text=True)
    return float(out.stdout.split()[-1])


@pytest.mark.slow
def test_memory_does_not_grow_with_the_columns(tmp_path):
    """Ten times the columns cost a frame ten times the memory; the file scan holds one
    column at a time, so its growth stays a small part of what the columns add."""
    n = 1_000_000
    rng = np.random.default_rng(0)
    paths = {}
    for k in (4, 40):
        df = pd.DataFrame({f"x{i}": rng.normal(size=n) for i in range(k)})
        df["y"] = rng.integers(0, 2, n)
        paths[k] = write_parquet(df, tmp_path / f"t{k}.parquet")
        del df
    frame = {k: _growth_mib(p, "frame") for k, p in paths.items()}
    stream = {k: _growth_mib(p, "file") for k, p in paths.items()}
    added = frame[40] - frame[4]
    assert added > 200, frame  # 36 float64 columns of 1M rows: 275 MiB of data
    assert stream[40] - stream[4] < 0.25 * added, (frame, stream)
