"""The retrain data's hash: a single file's bytes, or a folder's listing of files
(relative path, size, content hash), the same on local disk and on S3."""

from __future__ import annotations

import hashlib
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kubeloop.monitoring.stream import DataError, data_sha256


def _dataset(root):
    for day, rows in (("2026-11-01", [1, 2, 3]), ("2026-11-02", [4, 5])):
        (root / f"date={day}").mkdir(parents=True)
        pq.write_table(pa.table({"x": rows, "c": ["a"] * len(rows)}), root / f"date={day}" / "part-0.parquet")
    (root / "_SUCCESS").write_text("")  # not data: not hashed
    return root


def test_single_file_is_the_sha256_of_its_bytes(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("x,y\n1,2\n")
    assert data_sha256(str(path)) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_folder_hash_follows_content_not_location(tmp_path):
    a = _dataset(tmp_path / "a")
    first = data_sha256(str(a))
    assert first == data_sha256(str(a) + "/")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    assert data_sha256(str(b)) == first  # same files elsewhere: same hash
    (b / "_SUCCESS").write_text("done")
    assert data_sha256(str(b)) == first  # non-data files do not count
    # a changed file, an added one, a renamed one: each a different hash
    changed = {first}
    pq.write_table(pa.table({"x": [4, 6], "c": ["a", "a"]}), b / "date=2026-11-02" / "part-0.parquet")
    changed.add(data_sha256(str(b)))
    pq.write_table(pa.table({"x": [7], "c": ["b"]}), b / "date=2026-11-02" / "part-1.parquet")
    changed.add(data_sha256(str(b)))
    (b / "date=2026-11-02" / "part-1.parquet").rename(b / "date=2026-11-02" / "part-2.parquet")
    changed.add(data_sha256(str(b)))
    assert len(changed) == 4
    # a folder with one file is still a listing (its path counts), not that file's hash
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(a / "date=2026-11-01" / "part-0.parquet", one / "p.parquet")
    assert data_sha256(str(one)) != data_sha256(str(one / "p.parquet"))


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no such file or directory"):
        data_sha256(str(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no Parquet or CSV files"):
        data_sha256(str(tmp_path / "empty"))


def test_s3_prefix_hashes_as_the_local_folder(tmp_path, s3_endpoint, bucket, monkeypatch):
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    local = _dataset(tmp_path / "ds")
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    for path in local.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), bucket, f"data/ds/{path.relative_to(local).as_posix()}")
    assert data_sha256(f"s3://{bucket}/data/ds") == data_sha256(str(local))
    assert data_sha256(f"s3://{bucket}/data/ds/date=2026-11-01/part-0.parquet") == \
        data_sha256(str(local / "date=2026-11-01" / "part-0.parquet"))
