"""The one I/O layer: whole frames, bounded batches, footer row counts and the
commit-at-the-end writer, on real files and through the loopback S3 server."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kubeloop import tables
from kubeloop.components import ingest as ingest_module
from kubeloop.tables import (
    DataError,
    ParquetSink,
    count_rows,
    iter_batches,
    iter_frames,
    read_parquet,
    read_schema,
    write_parquet,
)


def typed_frame(n: int, seed: int = 0) -> pd.DataFrame:
    """Every dtype ingest gives, with missing values in each column that can hold them."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    x[::7] = np.nan
    text = np.array([f"note {i}" for i in range(n)], dtype=object)
    text[::5] = np.nan
    cat = pd.Categorical(rng.choice(["a", "b", "c"], size=n), categories=["a", "b", "c", "d"])
    cat[::11] = np.nan
    when = pd.Series(pd.date_range("2026-01-01", periods=n, freq="37min"))
    when[::13] = pd.NaT
    return pd.DataFrame({
        "x": x,
        "n": np.arange(n, dtype=np.int64),
        "flag": rng.random(n) < 0.5,
        "cat": cat,
        "when": when.astype("datetime64[ns]"),
        "text": pd.Series(text, dtype=object),
    })


def test_ingest_keeps_its_parquet_names():
    # Other steps import these from ingest; they are the I/O layer's own functions.
    assert ingest_module.read_parquet is tables.read_parquet
    assert ingest_module.write_parquet is tables.write_parquet
    assert ingest_module.DataError is tables.DataError


def test_batches_reassemble_the_frame_with_its_dtypes(tmp_path):
    df = typed_frame(1_000)
    path = write_parquet(df, tmp_path / "t.parquet")
    parts = list(iter_frames(path, max_rows=128))
    assert [len(p) for p in parts] == [128] * 7 + [104]
    back = pd.concat(parts, ignore_index=True)
    # concat of categoricals with equal categories keeps the dtype
    pd.testing.assert_frame_equal(back, df)
    pd.testing.assert_frame_equal(read_parquet(path), df)


def test_batches_are_bounded_by_bytes_too(tmp_path):
    df = pd.DataFrame({"a": np.arange(10_000, dtype=np.float64), "b": np.ones(10_000)})
    path = write_parquet(df, tmp_path / "t.parquet")
    batches = list(iter_batches(path, max_rows=10_000, max_bytes=16 * 1000))
    # 16 bytes a row: a thousand rows a batch at most
    assert all(b.num_rows <= 1000 for b in batches)
    assert all(b.nbytes <= 16 * 1000 for b in batches)
    assert sum(b.num_rows for b in batches) == 10_000
    np.testing.assert_array_equal(
        np.concatenate([b.column("a").to_numpy() for b in batches]), df["a"].to_numpy()
    )


def test_columns_are_projected(tmp_path):
    path = write_parquet(typed_frame(300), tmp_path / "t.parquet")
    batches = list(iter_batches(path, columns=["cat", "x"]))
    assert all(b.schema.names == ["cat", "x"] for b in batches)
    with pytest.raises(DataError, match="no column.*'nope'"):
        list(iter_batches(path, columns=["x", "nope"]))


def test_row_count_comes_from_the_footers(tmp_path, monkeypatch):
    path = write_parquet(typed_frame(2_500), tmp_path / "t.parquet")
    # Reading any column data would go through these; a footer count does not.
    monkeypatch.setattr(pq.ParquetFile, "read", None)
    monkeypatch.setattr(pq, "read_table", None)
    assert count_rows(path) == 2_500
    assert read_schema(path).names == list(typed_frame(1).columns)


def test_partitioned_folder_streams_as_one_table(tmp_path):
    root = tmp_path / "logs"
    frames = []
    for day in ("2026-12-01", "2026-12-02", "2026-12-03"):
        part = pd.DataFrame({"v": np.arange(100, dtype=np.float64)})
        write_parquet(part, root / f"date={day}" / "part-0.parquet")
        frames.append(part.assign(date=day))
    # A half-written file of an interrupted writer is hidden and never read.
    (root / "date=2026-12-03" / ".part-1.parquet.abc.tmp").write_bytes(b"PAR1 partial")
    assert count_rows(root) == 300
    back = pd.concat(iter_frames(root, max_rows=64), ignore_index=True)
    assert len(back) == 300
    assert sorted(back["date"].astype(str).unique()) == ["2026-12-01", "2026-12-02", "2026-12-03"]
    assert back["v"].sum() == 3 * sum(range(100))


def test_sink_writes_pieces_and_commits_at_the_end(tmp_path):
    target = tmp_path / "out" / "t.parquet"
    df = typed_frame(900)
    with ParquetSink(target, row_group_rows=256) as sink:
        for start in range(0, 900, 300):
            sink.write(df.iloc[start:start + 300])
            assert not target.exists()  # nothing under the real name until the end
        # Arrow batches are cast to the schema the first piece fixed.
        sink.write(pa.Table.from_pandas(df.iloc[:10], preserve_index=False))
    assert sink.rows == 910
    assert count_rows(target) == 910
    assert pq.ParquetFile(target).metadata.row_group(0).num_rows == 256
    pd.testing.assert_frame_equal(read_parquet(target).iloc[:900], df)
    assert [p.name for p in target.parent.iterdir()] == ["t.parquet"]


def test_interrupted_sink_leaves_nothing_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "t.parquet"
    old = typed_frame(50)
    write_parquet(old, target)
    with pytest.raises(RuntimeError, match="killed"):
        with ParquetSink(target) as sink:
            sink.write(typed_frame(500))
            raise RuntimeError("killed mid-write")
    pd.testing.assert_frame_equal(read_parquet(target), old)
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


def test_sink_with_a_schema_and_no_rows_writes_an_empty_table(tmp_path):
    schema = pa.schema([("a", pa.float64()), ("b", pa.string())])
    with ParquetSink(tmp_path / "e.parquet", schema=schema):
        pass
    assert count_rows(tmp_path / "e.parquet") == 0
    with pytest.raises(DataError, match="nothing was written"):
        with ParquetSink(tmp_path / "none.parquet"):
            pass
    assert not (tmp_path / "none.parquet").exists()


@pytest.mark.parametrize("content,words", [
    (None, "file not found"),
    (b"not parquet at all", "cannot parse as Parquet"),
])
def test_unreadable_tables_are_clear_errors(tmp_path, content, words):
    path = tmp_path / "bad.parquet"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=words):
        read_parquet(path)
    with pytest.raises(DataError, match=words):
        list(iter_batches(path))


def test_unsupported_scheme_is_a_clear_error():
    with pytest.raises(DataError, match="unsupported location scheme gs://"):
        count_rows("gs://bucket/t.parquet")


def test_s3_tables_stream_through_the_loopback_server(bucket, s3_endpoint, monkeypatch):
    # The endpoint comes from the environment, as on a cluster; pyarrow alone would ignore it.
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    df = typed_frame(700, seed=3)
    uri = f"s3://{bucket}/data/t.parquet"
    with ParquetSink(uri) as sink:
        sink.write(df.iloc[:400])
        sink.write(df.iloc[400:])
    assert count_rows(uri) == 700
    pd.testing.assert_frame_equal(read_parquet(uri), df)
    pd.testing.assert_frame_equal(pd.concat(iter_frames(uri, max_rows=100), ignore_index=True), df)
    # A folder of objects is a dataset too.
    write_parquet(df.iloc[:50], f"s3://{bucket}/data/more/part-1.parquet")
    write_parquet(df.iloc[50:80], f"s3://{bucket}/data/more/part-2.parquet")
    assert count_rows(f"s3://{bucket}/data/more") == 80


def test_interrupted_s3_sink_uploads_nothing(bucket, s3_endpoint, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    uri = f"s3://{bucket}/data/partial.parquet"
    with pytest.raises(KeyboardInterrupt):
        with ParquetSink(uri) as sink:
            sink.write(typed_frame(100))
            raise KeyboardInterrupt
    with pytest.raises(DataError, match="file not found"):
        count_rows(uri)


_COPY_SCRIPT = """
import resource, sys
import numpy as np, pandas as pd
from kubeloop.tables import ParquetSink, iter_frames
src, dst, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = np.random.default_rng(0)
with ParquetSink(src) as sink:  # the input itself is made in pieces
    for start in range(0, rows, 100_000):
        n = min(100_000, rows - start)
        sink.write(pd.DataFrame({f"c{i}": rng.normal(size=n) for i in range(10)}
                                | {"s": pd.Categorical(rng.choice(["a", "b"], size=n))}))
floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with ParquetSink(dst) as sink:
    for frame in iter_frames(src, max_rows=50_000):
        sink.write(frame.assign(c0=frame["c0"] * 2))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, sink.rows)
"""


@pytest.mark.slow
def test_streaming_copy_memory_is_flat_in_the_rows(tmp_path):
    # Peak RSS of reading, changing and writing N and 4N rows in batches (a fresh
    # process each): the batches, not the table, set the memory.
    import subprocess
    import sys

    peaks = {}
    for rows in (400_000, 1_600_000):
        out = subprocess.run(
            [sys.executable, "-c", _COPY_SCRIPT, str(tmp_path / f"in{rows}.parquet"),
             str(tmp_path / f"out{rows}.parquet"), str(rows)],
            check=True, capture_output=True, text=True,
        ).stdout.split()
        assert int(out[1]) == rows == count_rows(tmp_path / f"out{rows}.parquet")
        peaks[rows] = int(out[0])
    # 4x the rows (96 MB more data in memory if it were held whole) must not
    # show in the peak: at most a quarter more.
    assert peaks[1_600_000] <= 1.25 * peaks[400_000], peaks


def test_a_refused_s3_read_is_access_denied_not_bad_data():
    from kubeloop.storage import PermissionDenied
    from kubeloop.tables import DataError, read_error

    denied = OSError("When getting information for key 'k' in bucket 'data': AWS Error ACCESS_DENIED "
                     "during HeadObject operation: No response body.")
    err = read_error("s3://data/k", denied)
    assert isinstance(err, PermissionDenied) and "access denied" in str(err)
    assert "AWS_ACCESS_KEY_ID" in str(err)
    # Anything else, or a local file, is the data's problem, named with the file.
    assert type(read_error("s3://data/k", OSError("Parquet magic bytes not found"))) is DataError
    assert type(read_error("/tmp/k", denied)) is DataError
