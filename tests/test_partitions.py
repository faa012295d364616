"""Partitioned statistics: plans, row ranges, and the fan-out through the KFP
local runner, whose four partitions give the one-pod statistics within the
sketches' stated error."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from nested_support import assert_nested_close

from kubeloop.components.partitions import (
    PartitionError,
    drift_data,
    drift_partition,
    dump_drift_part,
    load_drift_part,
    merge_drift,
    partition_batches,
    plan_partitions,
    profile_data,
    sketch_partition,
)
from kubeloop.config import Config
from kubeloop.monitoring.sketch import loads


def _table(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(50, 10, size=n)
    x[rng.random(n) < 0.04] = np.nan
    c = rng.choice(["basic", "plus", "pro", "team"], size=n, p=[0.5, 0.3, 0.15, 0.05]).astype(object)
    c[rng.random(n) < 0.02] = None
    return pd.DataFrame({"x": x, "k": rng.integers(0, 7, size=n).astype(float), "plan": c})


def _cfg(partition_rows: int, sample_rows: int = 200_000) -> Config:
    return Config.from_dict({"scale": {"partition_rows": partition_rows, "sample_rows": sample_rows}})


@pytest.mark.parametrize(("n", "size", "expected"), [
    (0, 10, [(0, 0)]),
    (5, 10, [(0, 5)]),
    (10, 10, [(0, 10)]),
    (11, 10, [(0, 10), (10, 1)]),
    (40, 10, [(0, 10), (10, 10), (20, 10), (30, 10)]),
])
def test_plans_cover_every_row_once(n, size, expected):
    plan = plan_partitions(n, size)
    assert [(p["first_row"], p["rows"]) for p in plan] == expected
    assert [p["index"] for p in plan] == list(range(len(expected)))


def test_bad_plans_are_refused():
    with pytest.raises(PartitionError, match="partition_rows"):
        plan_partitions(10, 0)
    with pytest.raises(PartitionError, match="rows"):
        plan_partitions(-1, 10)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "parquet-dir"])
def test_partition_batches_are_exactly_the_row_range(tmp_path, fmt):
    df = _table(1000)
    if fmt == "parquet":
        uri = tmp_path / "t.parquet"
        df.to_parquet(uri, row_group_size=97)
    elif fmt == "csv":
        uri = tmp_path / "t.csv"
        df.to_csv(uri, index=False)
    else:
        uri = tmp_path / "parts"
        uri.mkdir()
        for i, lo in enumerate(range(0, 1000, 300)):
            df.iloc[lo:lo + 300].to_parquet(uri / f"part-{i}.parquet", row_group_size=50 + 20 * i)
    for first, rows in [(0, 1000), (0, 1), (250, 333), (299, 2), (300, 300), (999, 1), (700, 300), (10, 0)]:
        got = [b.to_pandas() for b in partition_batches(str(uri), first, rows, ["x", "plan"], batch_rows=64)]
        got = pd.concat(got, ignore_index=True) if got else pd.DataFrame(columns=["x", "plan"])
        want = df.iloc[first:first + rows][["x", "plan"]].reset_index(drop=True)
        assert len(got) == rows
        np.testing.assert_array_equal(got["x"].to_numpy(float), want["x"].to_numpy(float))
        assert got["plan"].tolist() == want["plan"].tolist()


def test_a_partition_past_the_data_is_a_clear_error(tmp_path):
    uri = tmp_path / "t.parquet"
    _table(100).to_parquet(uri)
    with pytest.raises(PartitionError, match="did it change since the plan"):
        sketch_partition(str(uri), {"x": "numeric"}, {"index": 3, "first_row": 90, "rows": 20}, _cfg(20))
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    from kubeloop.errors import UserError

    with pytest.raises(UserError, match="bad.parquet"):
        list(partition_batches(str(bad), 0, 10, ["x"]))


def test_in_process_shapes_agree(tmp_path):
    uri = tmp_path / "t.parquet"
    _table(9000, 1).to_parquet(uri, row_group_size=1000)
    one, s1 = profile_data(str(uri), _cfg(10**9))
    four, s4 = profile_data(str(uri), _cfg(2500))
    assert s1.n_rows == s4.n_rows == 9000
    # everything fits the sample: the entries are exact and equal
    assert one["columns"] == four["columns"]
    assert "sample" not in one["columns"]["x"] and one["columns"]["k"]["exact"]
    assert one["columns"]["plan"]["levels"] == 4


def _entry_cdf(entry: dict, at: np.ndarray) -> np.ndarray:
    pts, w = np.asarray(entry["points"]), np.asarray(entry["weights"], float)
    cum = np.cumsum(w) / w.sum()
    idx = np.searchsorted(pts, at, side="right") - 1
    return np.where(idx >= 0, cum[np.maximum(idx, 0)], 0.0)


@pytest.mark.slow
def test_one_pod_and_four_partitions_give_equal_statistics_through_kfp(tmp_path, monkeypatch):
    from kubeloop.local_run import run_pipeline
    from kubeloop.pipelines.profiling import build_profiling_pipeline

    df = _table(40_000, 2)
    uri = tmp_path / "data.parquet"
    df.to_parquet(uri, row_group_size=4096)
    monkeypatch.chdir(tmp_path)
    results = {}
    for shape, partition_rows in (("one", 1_000_000), ("four", 10_000)):
        cfg = _cfg(partition_rows, sample_rows=5000)  # numeric columns sampled: the sketch path
        run = run_pipeline(build_profiling_pipeline(cfg), {"data_uri": str(uri)}, work_dir=tmp_path / shape)
        profile = json.loads(open(os.path.join(run.outputs.path, "profile.json")).read())
        merged = loads(open(os.path.join(run.outputs.path, "sketch.json"), "rb").read())
        sketched = [e for e in run.events if e[0] != "error" and e[1].get("stage") == "sketch"]
        results[shape] = (profile, merged, len(sketched))
    (p1, m1, pods1), (p4, m4, pods4) = results["one"], results["four"]
    assert (pods1, pods4) == (1, 4)
    assert m1.n_rows == m4.n_rows == len(df)
    # exact parts exactly
    for name in ("x", "k", "plan"):
        a, b = m1.columns[name], m4.columns[name]
        assert (a.rows, a.missing) == (b.rows, b.missing)
    assert m1.columns["plan"].cats.counts == m4.columns["plan"].cats.counts == df["plan"].value_counts().to_dict()
    assert p1["columns"]["plan"] == p4["columns"]["plan"]
    assert p1["columns"]["k"] == p4["columns"]["k"]  # seven values: exact points
    x = df["x"].dropna().to_numpy()
    for p in (p1, p4):
        e = p["columns"]["x"]
        assert e["n"] == x.size and e["missing"] == df["x"].isna().sum()
        assert e["mean"] == pytest.approx(x.mean(), rel=1e-12) and e["std"] == pytest.approx(x.std(), rel=1e-10)
        assert (e["min"], e["max"]) == (x.min(), x.max())
        assert e["sample"] == 5000 and e["rank_error"] > 0
        # the profile's CDF within the stated error of the data's (plus the points' own 1/points step)
        at = np.quantile(x, np.linspace(0.01, 0.99, 99))
        true = np.searchsorted(np.sort(x), at, side="right") / x.size
        assert np.abs(_entry_cdf(e, at) - true).max() <= e["rank_error"] + 1 / len(e["points"])
    # the sample is the same rows in both shapes, so the points are too
    assert p1["columns"]["x"]["points"] == p4["columns"]["x"]["points"]
    assert p1["columns"]["x"]["weights"] == p4["columns"]["x"]["weights"]


def _cli(*argv: str, capsys) -> tuple[int, str, str]:
    from kubeloop import cli

    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_profile_command_gives_the_same_profile_fanned_out_and_in_process(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = tmp_path / "data.csv"
    df = _table(12_000, 4)
    df.to_csv(uri, index=False)
    code, out, err = _cli("profile", "--data", str(uri), "--partition-rows", "3000", "--json",
                          "--output", str(tmp_path / "p.json"), capsys=capsys)
    assert code == 0, err
    fanned = json.loads(out)
    assert err.count("sketch") >= 4  # one progress line per partition
    assert json.loads((tmp_path / "p.json").read_text()) == fanned
    code, out, err = _cli("profile", "--data", str(uri), "--in-process", "--json", capsys=capsys)
    assert code == 0, err
    single = json.loads(out)
    assert single["columns"] == fanned["columns"] and single["rows_total"] == fanned["rows_total"] == len(df)
    assert fanned["columns"]["plan"]["counts"] == df["plan"].value_counts().to_dict()
    code, out, _ = _cli("profile", "--data", str(uri), "--in-process", capsys=capsys)
    assert code == 0 and "12000 rows" in out and "4 levels" in out


def test_profile_command_bad_input_is_a_user_error(tmp_path, capsys):
    code, _, err = _cli("profile", "--data", str(tmp_path / "nothing.parquet"), "--in-process", capsys=capsys)
    assert code == 2 and "nothing.parquet" in err and "Traceback" not in err
    (tmp_path / "t.csv").write_text("a,b\n1,x\n")
    code, _, err = _cli("profile", "--data", str(tmp_path / "t.csv"), "--partition-rows", "0", capsys=capsys)
    assert code == 2 and "partition_rows" in err
    # one line naming the key and the rule, as config errors are, not pydantic's report
    assert "greater than or equal to 1" in err and "errors.pydantic.dev" not in err


def _drift_case(tmp_path, n: int = 30_000):
    from kubeloop.monitoring.profile import build_profile, dumps

    ref = _table(20_000, 7)
    cur = _table(n, 8)
    cur["x"] = cur["x"] + 1.5  # a shift in x only
    schema = {"task": "regression", "target": "y",
              "columns": {"x": {"kind": "numeric", "role": "feature"}, "k": {"kind": "numeric", "role": "feature"},
                          "plan": {"kind": "categorical", "role": "feature"}}}
    profile_path = tmp_path / "reference.json"
    profile_path.write_bytes(dumps(build_profile(ref, schema)))
    cur_path = tmp_path / "current.parquet"
    cur.to_parquet(cur_path, row_group_size=2048)
    return str(profile_path), str(cur_path)


def _same_report(a: dict, b: dict) -> None:
    assert a["drifted_columns"] == b["drifted_columns"]
    assert_nested_close(a["columns"], b["columns"], "columns")


@pytest.mark.parametrize("n", [30_000, 6000])  # 6,000: current values kept for scipy's exact KS
def test_partitioned_drift_equals_one_pass(tmp_path, n):
    from kubeloop.monitoring.drift import drift, load_source_profile

    ref_uri, cur_uri = _drift_case(tmp_path, n)
    cfg = _cfg(n // 4 + 1)
    one = drift(ref_uri, cur_uri, cfg)
    reference = load_source_profile(ref_uri, cfg)
    four = drift_data(reference, cur_uri, cfg)
    assert four["partitions"] == 4 and one["drifted_columns"] == ["x"]
    _same_report(one, four)
    # through the serialised hand-over, as between pods
    parts = [load_drift_part(dump_drift_part(drift_partition(cur_uri, reference, p, cfg)))
             for p in plan_partitions(n, n // 4 + 1)]
    _same_report(one, merge_drift(parts, reference, cfg))


def test_accumulators_of_different_references_do_not_merge(tmp_path):
    from kubeloop.monitoring.stats import NumericAccumulator, merge_accumulators

    with pytest.raises(ValueError, match="different reference points"):
        NumericAccumulator([1.0, 2.0]).merge(NumericAccumulator([1.0, 3.0]))
    with pytest.raises(ValueError, match="different columns"):
        merge_accumulators([{"a": NumericAccumulator([1.0])}, {"b": NumericAccumulator([1.0])}])


@pytest.mark.slow
def test_drift_fans_out_through_kfp_with_the_one_pass_report(tmp_path, monkeypatch):
    from kubeloop.local_run import run_pipeline
    from kubeloop.monitoring.drift import drift
    from kubeloop.pipelines.profiling import build_drift_pipeline

    ref_uri, cur_uri = _drift_case(tmp_path)
    monkeypatch.chdir(tmp_path)
    cfg = _cfg(7500)
    run = run_pipeline(build_drift_pipeline(cfg), {"data_uri": cur_uri, "reference_uri": ref_uri},
                       work_dir=tmp_path / "w")
    report = json.loads(open(run.outputs.path).read())
    assert report["partitions"] == 4
    assert sum(1 for kind, e in run.events if kind != "error" and e.get("stage") == "drift-part") == 4
    _same_report(drift(ref_uri, cur_uri, cfg), report)


@pytest.mark.parametrize("which", ["profiling", "drift"])
def test_the_fan_out_pipelines_compile_for_a_cluster(tmp_path, which):
    import yaml

    from kubeloop import cli

    out = tmp_path / f"{which}.yaml"
    assert cli.main(["compile", "--pipeline", which, "--output", str(out), "--image", "registry.example/kubeloop:1"]) == 0
    docs = list(yaml.safe_load_all(out.read_text()))
    spec, platform = docs[0], docs[1]
    cfg = Config()
    # one pod per partition: the partition steps sit under a ParallelFor over the plan's output
    loops = [t for t in spec["root"]["dag"]["tasks"].values() if "parameterIterator" in t]
    assert len(loops) == 1 and "plan-op" in str(loops[0]["parameterIterator"])
    assert loops[0]["iteratorPolicy"]["parallelismLimit"] == cfg.train.parallelism
    executors = spec["deploymentSpec"]["executors"]
    assert len(executors) == 3
    for name, ex in executors.items():
        c = ex["container"]
        assert c["image"] == "registry.example/kubeloop:1"
        assert c["resources"], name
        env = {e["name"]: e["value"] for e in c.get("env", [])}
        assert env["OMP_NUM_THREADS"] == str(cfg.resources.default.cpu_limit_cores()), name
    secrets = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(secrets) == set(executors)
    for ex in secrets.values():
        assert ex["secretAsEnv"][0]["secretName"] == cfg.storage.credentials_secret
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["config"]["defaultValue"]["scale"]["partition_rows"] == cfg.scale.partition_rows


def test_partitions_read_from_s3_as_from_disk(tmp_path, bucket, s3_endpoint, capsys):
    """Parquet and CSV files under an s3:// prefix, on the loopback S3 server: the
    partitioned profile equals the one of the same files on disk."""
    from kubeloop.storage import write_bytes

    cfg = Config.from_dict({"scale": {"partition_rows": 700}, "storage": {"endpoint_url": s3_endpoint}})
    df = _table(2000, 9)
    local = tmp_path / "parts"
    local.mkdir()
    df.iloc[:1200].to_parquet(local / "a.parquet", row_group_size=256)
    df.iloc[1200:].to_csv(local / "b.csv", index=False)
    prefix = f"s3://{bucket}/tables/churn"
    for name in ("a.parquet", "b.csv"):
        write_bytes(f"{prefix}/{name}", (local / name).read_bytes(), cfg.storage)
    on_disk, _ = profile_data(str(local), cfg)
    on_s3, merged = profile_data(prefix, cfg, storage=cfg.storage)
    assert merged.n_rows == 2000
    assert on_s3["columns"] == on_disk["columns"]
    assert on_s3["columns"]["plan"]["counts"] == df["plan"].value_counts().to_dict()
