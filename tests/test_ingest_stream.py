"""Streaming ingest: the same tables, kinds and errors as the in-memory ingest, in batches.

Every test of ``test_ingest`` and ``test_real_exports`` that calls ``ingest`` runs
here a second time with ``ingest`` replaced by the streaming path (tiny batches,
so every rule crosses batch boundaries) followed by ``read_parquet``: the same
assertions hold for both.
"""

from __future__ import annotations

import inspect
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import test_ingest
import test_real_exports

from kubeloop.components.ingest import ingest, read_parquet, write_parquet
from kubeloop.components.ingest_stream import ingest_to_parquet
from kubeloop.datagen import write_sample

# Small enough that the fixtures (hundreds of rows) span many batches.
BATCH_ROWS = 64
BATCH_BYTES = 4096


def streamed_ingest(uri, **kwargs):
    """``ingest``'s signature and result, through ``ingest_to_parquet``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "typed.parquet"
        profile = ingest_to_parquet(uri, out, batch_rows=BATCH_ROWS, batch_bytes=BATCH_BYTES, **kwargs)
        return read_parquet(out), profile


# memory_bytes is exact in memory and an estimate when streamed (see below); the
# storage stand-in knows no folders (the loopback S3 server is used below instead).
_WHOLE_FRAME_ONLY = {"test_profile_describes_the_frame", "test_s3_uri_is_read_through_the_storage_layer"}


def _module_fixtures(fn, module):
    # A fixture the test module defines itself (a whole pipeline run, such as the
    # gate's) is not visible here; those tests' ingest calls repeat ones below.
    return set(inspect.signature(fn).parameters) & set(vars(module))


def _ingest_tests(module):
    for name, fn in vars(module).items():
        if (name.startswith("test_") and callable(fn) and name not in _WHOLE_FRAME_ONLY
                and not _module_fixtures(fn, module)):
            if re.search(r"(?<![\w.])ingest\(", inspect.getsource(fn)):
                yield name, fn


for _module in (test_ingest, test_real_exports):
    for _name, _fn in _ingest_tests(_module):
        globals()[f"{_name}__streamed"] = _fn


@pytest.fixture(autouse=True)
def _streaming(monkeypatch):
    for module in (test_ingest, test_real_exports):
        monkeypatch.setattr(module, "ingest", streamed_ingest)


def test_the_streamed_tests_were_collected():
    # Guards the collection above: if it found nothing, nothing would be checked.
    names = [n for n in globals() if n.endswith("__streamed")]
    assert len(names) >= 20, names


def _same(uri, tmp_path, **kwargs):
    df, profile = ingest(uri, **kwargs)
    write_parquet(df, tmp_path / "whole.parquet")
    streamed, sprofile = streamed_ingest(uri, **kwargs)
    pd.testing.assert_frame_equal(read_parquet(tmp_path / "whole.parquet"), streamed)
    for key in ("n_rows", "n_columns", "columns", "dropped_columns", "sha256", "format"):
        assert sprofile[key] == profile[key], key
    return sprofile


@pytest.mark.parametrize("kind", ["churn", "house_prices"])
@pytest.mark.parametrize("name", ["t.csv", "t.csv.gz", "t.tsv", "t.parquet"])
def test_streamed_table_equals_the_whole_frame_written(tmp_path, kind, name):
    path = write_sample(tmp_path / name, kind, n_rows=700, seed=4)
    profile = _same(path, tmp_path)
    assert profile["streamed"] is True
    # The estimate of the frame's memory is within 10 % of pandas' count.
    df, whole = ingest(path)
    assert abs(profile["memory_bytes"] - whole["memory_bytes"]) <= 0.1 * whole["memory_bytes"]


# --------------------------------------------------------------------------- memory

_PROBE = """
import sys
import pyarrow as pa
from kubeloop.components.ingest_stream import ingest_to_parquet
pool = pa.default_memory_pool()
p = ingest_to_parquet(sys.argv[1], sys.argv[2], batch_rows=16384, batch_bytes=2**20)
assert p["streamed"], p
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent.
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(pool.max_memory(), int(hwm.split()[1]) * 1024)
"""


def _table(n: int) -> pa.Table:
    rng = np.random.default_rng(0)
    return pa.table({**{f"x{i}": rng.normal(size=n) for i in range(8)},
                     "city": np.array(["oslo", "lima", "pune", "kyiv"])[rng.integers(0, 4, n)],
                     "y": rng.integers(0, 2, n)})


def _peaks(src: Path, out: Path) -> tuple[int, int]:
    import subprocess
    import sys

    # A fresh process each: Arrow's pool peak and the RSS peak cannot be reset.
    done = subprocess.run([sys.executable, "-c", _PROBE, str(src), str(out)],
                          capture_output=True, text=True, check=True)
    arrow, rss = map(int, done.stdout.split())
    return arrow, rss


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_streamed_ingest_memory_is_flat_in_the_rows(tmp_path, fmt):
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    peaks = {}
    added = 0
    for n in (250_000, 1_000_000):
        table = _table(n)
        src = tmp_path / f"t{n}.{fmt}"
        if fmt == "csv":
            pa_csv.write_csv(table, src)
        else:  # row groups of a usual writer's size; a reader holds one at a time
            pq.write_table(table, src, row_group_size=65_536)
        added = table.nbytes - added
        del table
        peaks[n] = _peaks(src, tmp_path / f"o{n}.parquet")
        assert pq.ParquetFile(tmp_path / f"o{n}.parquet").metadata.num_rows == n
    (arrow_small, rss_small), (arrow_big, rss_big) = peaks[250_000], peaks[1_000_000]
    # Four times the rows (60 MB more data in memory): Arrow's peak stays within a
    # few batches (it would be four times as high if it held the table), and the
    # process grows by a small share of the added data.
    assert arrow_big <= 1.5 * arrow_small, peaks
    assert rss_big - rss_small <= 0.3 * added, (peaks, added)
