"""The split cut batch by batch from Parquet: the same splits as in memory.

Every test of ``test_split`` that calls ``split_dataset`` runs here a second time
with the frame written to Parquet in small row groups and split by
``split_parquet`` in small batches, so every rule crosses batch boundaries; the
same assertions hold for both paths. Below, the two paths' files are compared.
"""

from __future__ import annotations

import inspect
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import test_split

from kubeloop.components.split import SPLIT_NAMES, Splits, split_dataset
from kubeloop.components.split_stream import split_parquet
from kubeloop.config import SplitConfig
from kubeloop.tables import ParquetSink, read_parquet, write_parquet

BATCH_ROWS = 97
ROW_GROUP_ROWS = 250


def _write(df: pd.DataFrame, path: Path) -> None:
    with ParquetSink(path, row_group_rows=ROW_GROUP_ROWS) as sink:
        sink.write(df)


def streamed_split(df: pd.DataFrame, schema, cfg: SplitConfig) -> Splits:
    """``split_dataset``'s signature and result, through Parquet and ``split_parquet``."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.parquet"
        _write(df, src)
        outs = {name: Path(tmp) / f"{name}.parquet" for name in SPLIT_NAMES}
        plan = split_parquet(src, outs, schema, cfg, batch_rows=BATCH_ROWS)
        frames = {name: read_parquet(path) for name, path in outs.items()}
    return Splits(**frames, summary=plan.summary, source_rows=plan.source_rows)


def _split_tests():
    for name, fn in vars(test_split).items():
        if name.startswith("test_") and callable(fn):
            if re.search(r"(?<![\w.])split_dataset\(", inspect.getsource(fn)):
                yield name, fn


for _name, _fn in _split_tests():
    globals()[f"{_name}__streamed"] = _fn


@pytest.fixture(autouse=True)
def _streaming(monkeypatch):
    monkeypatch.setattr(test_split, "split_dataset", streamed_split)


def test_the_streamed_tests_were_collected():
    names = [n for n in globals() if n.endswith("__streamed")]
    assert len(names) >= 15, names


@pytest.mark.parametrize("task,time,ids,expected", test_split.STRATEGIES)
@pytest.mark.parametrize("duplicates", ["drop", "keep"])
def test_streamed_files_equal_the_frames_split_in_memory(tmp_path, task, time, ids, expected, duplicates):
    df = test_split.make_frame(task=task)
    df["color"] = df["color"].astype("category")
    df.loc[::7, "x"] = np.nan
    df = pd.concat([df, df.iloc[:50]], ignore_index=True)  # exact duplicates across row groups
    schema = test_split.make_schema(task, time, ids)
    cfg = SplitConfig(duplicates=duplicates)
    _write(df, tmp_path / "in.parquet")
    whole = split_dataset(read_parquet(tmp_path / "in.parquet"), schema, cfg)
    outs = {name: tmp_path / f"{name}.parquet" for name in SPLIT_NAMES}
    plan = split_parquet(tmp_path / "in.parquet", outs, schema, cfg, batch_rows=BATCH_ROWS)
    assert plan.summary == whole.summary
    for name in SPLIT_NAMES:
        write_parquet(whole.frames()[name], tmp_path / f"whole-{name}.parquet")
        pd.testing.assert_frame_equal(read_parquet(outs[name]), read_parquet(tmp_path / f"whole-{name}.parquet"))
        np.testing.assert_array_equal(plan.source_rows[name], whole.source_rows[name])
        # The cut keeps the input's column types (Arrow batches are filtered, not rebuilt).
        assert pq.read_schema(outs[name]).types == pq.read_schema(tmp_path / "in.parquet").types


def test_a_failed_cut_leaves_no_split(tmp_path, monkeypatch):
    from kubeloop.components import split_stream

    df = test_split.make_frame()
    _write(df, tmp_path / "in.parquet")
    real = split_stream.iter_batches
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        for i, batch in enumerate(real(*args, **kwargs)):
            if calls["n"] == 2 and i == 3:  # the cut's pass, part way through
                raise OSError("disk full")
            yield batch

    monkeypatch.setattr(split_stream, "iter_batches", failing)
    outs = {name: tmp_path / f"{name}.parquet" for name in SPLIT_NAMES}
    with pytest.raises(OSError, match="disk full"):
        split_parquet(tmp_path / "in.parquet", outs, test_split.make_schema(), SplitConfig(), batch_rows=BATCH_ROWS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]


def test_a_column_the_schema_names_must_be_in_the_file(tmp_path):
    from kubeloop.components.split import SplitError

    _write(test_split.make_frame().drop(columns=["when"]), tmp_path / "in.parquet")
    outs = {name: tmp_path / f"{name}.parquet" for name in SPLIT_NAMES}
    with pytest.raises(SplitError, match=r"\['when'\] named in the schema are not in the data"):
        split_parquet(tmp_path / "in.parquet", outs, test_split.make_schema(time="when"), SplitConfig())
