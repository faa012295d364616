"""``kubeloop drift`` on generated data with a known truth: files and prefixes,
Parquet and CSV, local and s3://, registered profiles, a million rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from monitor_support import CATEGORICAL, DRIFTED, NUMERIC, drift_frame, write

from kubeloop.config import Config
from kubeloop.monitoring.drift import drift
from kubeloop.monitoring.profile import PROFILE_FILE, build_profile, dumps, load_profile
from kubeloop.registry import Registry

ALL = set(NUMERIC + CATEGORICAL)


def kubeloop(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("kubeloop")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "kubeloop.cli"]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def run_json(*args: str, **kw) -> dict:
    proc = kubeloop("drift", *args, "--json", **kw)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("drift")
    write(drift_frame(20_000, 1, False), root / "ref.parquet")
    write(drift_frame(20_000, 2, True), root / "drifted.csv")
    write(drift_frame(20_000, 3, False), root / "stable.parquet")
    # a prefix of several files, mixed formats
    write(drift_frame(6_000, 4, True), root / "prefix" / "date=2026-11-01" / "a.parquet")
    write(drift_frame(6_000, 5, True), root / "prefix" / "date=2026-11-02" / "b.csv")
    return root


def test_drifted_columns_are_exactly_the_injected_ones(data):
    out = run_json("--reference", str(data / "ref.parquet"), "--current", str(data / "drifted.csv"))
    assert set(out["drifted_columns"]) == DRIFTED
    for name in ALL:
        rec = out["columns"][name]
        assert rec["drifted"] is (name in DRIFTED)
        if rec["kind"] == "numeric":
            assert {"ks_statistic", "ks_pvalue", "psi", "wasserstein_norm"} <= rec.keys()
        else:
            assert {"chi2_statistic", "chi2_pvalue", "psi", "jensen_shannon", "unseen_rate"} <= rec.keys()
    assert out["columns"]["c2"]["unseen_categories"] == ["new"]


def test_stable_data_flags_nothing_and_exits_zero(data):
    out = run_json("--reference", str(data / "ref.parquet"), "--current", str(data / "stable.parquet"))
    assert out["drifted_columns"] == []
    proc = kubeloop("drift", "--reference", str(data / "ref.parquet"), "--current", str(data / "stable.parquet"))
    assert proc.returncode == 0 and "0 of 8 columns drifted" in proc.stdout


def test_prefix_of_mixed_files(data):
    report = drift(str(data / "ref.parquet"), str(data / "prefix"), Config())
    assert report["n_current"] == 12_000
    assert set(report["drifted_columns"]) == DRIFTED


def test_s3_reference_and_current(data, s3_endpoint, bucket):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.upload_file(str(data / "ref.parquet"), bucket, "ref/ref.parquet")
    s3.upload_file(str(data / "drifted.csv"), bucket, "cur/part-1.csv")
    out = run_json("--reference", f"s3://{bucket}/ref/ref.parquet", "--current", f"s3://{bucket}/cur/",
                   "--s3-endpoint", s3_endpoint)
    assert set(out["drifted_columns"]) == DRIFTED


@pytest.mark.slow
def test_million_rows_do_not_cry_wolf(tmp_path):
    # With a million rows on each side every p-value of a real shift is ~0, and a
    # stable column's tests still reject now and then; effect sizes decide.
    write(drift_frame(1_000_000, 11, False), tmp_path / "ref.parquet")
    write(drift_frame(1_000_000, 12, False), tmp_path / "stable.parquet")
    write(drift_frame(1_000_000, 13, True), tmp_path / "drifted.parquet")
    stable = run_json("--reference", str(tmp_path / "ref.parquet"), "--current", str(tmp_path / "stable.parquet"))
    assert stable["drifted_columns"] == []
    drifted = run_json("--reference", str(tmp_path / "ref.parquet"), "--current", str(tmp_path / "drifted.parquet"))
    assert set(drifted["drifted_columns"]) == DRIFTED
    # a million values a side are kept and sorted: KS equals scipy's on all of them
    from scipy.stats import ks_2samp

    ref, cur = pd.read_parquet(tmp_path / "ref.parquet"), pd.read_parquet(tmp_path / "drifted.parquet")
    for c in NUMERIC:
        rec = drifted["columns"][c]
        want = ks_2samp(ref[c].dropna(), cur[c].dropna()).statistic
        assert rec["ks_method"] == "exact" and rec["ks_error_bound"] == 0.0
        assert abs(rec["ks_statistic"] - want) <= 1e-6, (c, rec["ks_statistic"], want)
    # beyond what may be kept (here a config cap of 100,000 values), a uniform sample
    # of the reference stands in and the report states the bound its KS is within
    (tmp_path / "cap.yaml").write_text("monitoring:\n  exact_reference_rows: 100000\n")
    capped = run_json("--config", str(tmp_path / "cap.yaml"), "--reference", str(tmp_path / "ref.parquet"),
                      "--current", str(tmp_path / "drifted.parquet"))
    assert set(capped["drifted_columns"]) == DRIFTED
    for c in NUMERIC:
        rec = capped["columns"][c]
        want = ks_2samp(ref[c].dropna(), cur[c].dropna()).statistic
        assert rec["ks_method"] == "sample" and rec["n_reference"] == ref[c].notna().sum()
        assert 0 < rec["ks_error_bound"] < 0.02 and abs(rec["ks_statistic"] - want) <= rec["ks_error_bound"]
    assert "KS within" in kubeloop("drift", "--config", str(tmp_path / "cap.yaml"), "--reference",
                                   str(tmp_path / "ref.parquet"), "--current", str(tmp_path / "drifted.parquet")).stdout


def test_small_samples_are_guarded_by_the_test(tmp_path):
    # 40 rows a side: the effect sizes are mostly noise above their thresholds; the
    # p-value guard keeps false alarms near its level (5 % per column) instead.
    cfg = Config()
    flagged = effect_only = checks = 0
    for seed in range(15):
        write(drift_frame(40, 100 + seed, False), tmp_path / "ref.parquet")
        write(drift_frame(40, 200 + seed, False), tmp_path / "cur.parquet")
        report = drift(str(tmp_path / "ref.parquet"), str(tmp_path / "cur.parquet"), cfg)
        for rec in report["columns"].values():
            checks += 1
            flagged += rec["drifted"]
            keys = ("ks_statistic", "psi", "wasserstein_norm") if rec["kind"] == "numeric" else ("psi", "jensen_shannon")
            th = {"ks_statistic": 0.1, "psi": 0.2, "wasserstein_norm": 0.1, "jensen_shannon": 0.1}
            effect_only += any(rec[k] >= th[k] for k in keys)
    assert effect_only > 0.8 * checks
    assert flagged <= 0.1 * checks


def test_html_report_written(data, tmp_path):
    proc = kubeloop("drift", "--reference", str(data / "ref.parquet"), "--current", str(data / "drifted.csv"),
                    "--report", str(tmp_path / "r.html"))
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "r.html").read_text()
    assert "<svg" in page and "n1" in page and "<script" not in page
    assert len(page) < 200_000


@pytest.mark.parametrize(
    "args,message",
    [
        (["--reference", "/nonexistent/x.parquet", "--current", "/nonexistent/y.csv"], "no such file"),
        (["--reference", "model:churn", "--current", "x.csv", "--registry", "/nonexistent/reg"], "no registry"),
        (["--reference", "model:", "--current", "x.csv"], "expected model:NAME"),
        (["--reference", "ftp://host/x.csv", "--current", "x.csv"], "unsupported location scheme"),
    ],
)
def test_bad_input_exit_2(args, message, tmp_path):
    proc = kubeloop("drift", *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_text_in_a_numeric_column_counts_as_missing(data, tmp_path):
    bad = drift_frame(2000, 5, False)
    bad["n1"] = bad["n1"].astype(str)
    bad.loc[1500:, "n1"] = "oops"  # beyond the first block pyarrow infers types from
    bad["n2"] = bad["n2"].astype(object)
    bad.loc[10:19, "n2"] = "?"
    write(bad, tmp_path / "bad.csv")
    out = run_json("--reference", str(data / "ref.parquet"), "--current", str(tmp_path / "bad.csv"))
    assert out["columns"]["n1"]["missing_rate_current"] == pytest.approx(500 / 2000)
    assert out["drifted_columns"] == ["n1"]
    assert any("missing rate" in r for r in out["columns"]["n1"]["reasons"])
    assert out["columns"]["n2"]["missing_rate_current"] == pytest.approx(10 / 2000)


# --------------------------------------------------------------------------- registered profiles


def _schema() -> dict:
    cols = {c: {"kind": "numeric", "role": "feature"} for c in NUMERIC}
    cols.update({c: {"kind": "categorical", "role": "feature"} for c in CATEGORICAL})
    cols["y"] = {"kind": "categorical", "role": "target"}
    return {"task": "classification", "target": "y", "labels": ["0", "1"], "columns": cols}


def _model(df: pd.DataFrame):
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    features = ColumnTransformer([
        ("num", SimpleImputer(), NUMERIC),
        ("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
    ])
    return make_pipeline(features, LogisticRegression(max_iter=200)).fit(df[NUMERIC + CATEGORICAL], df["y"])


def register_version(registry: Registry, tmp: Path, *, with_profile: bool) -> str:
    df = drift_frame(3000, 31, False)
    df["y"] = np.where(df["n1"] + (df["c1"] == "a") * 2 > 11, "1", "0")
    model = _model(df)
    joblib.dump(model, tmp / "model.joblib")
    files = {
        "model/model.joblib": str(tmp / "model.joblib"),
        "schema.json": json.dumps(_schema()).encode(),
        "metrics.json": json.dumps({"accuracy": 0.9}).encode(),
        "monitoring/reference.parquet": df.to_parquet(index=False),
    }
    if with_profile:
        prof = build_profile(df, _schema(), predictions=model.predict(df[NUMERIC + CATEGORICAL]), metrics={"accuracy": 0.9})
        files[PROFILE_FILE] = dumps(prof)
    info = registry.register("churn", files)
    registry.set_alias("churn", "production", info.version, expected_version=...)
    return info.version


@pytest.mark.parametrize("with_profile", [True, False])
def test_model_reference(tmp_path, data, with_profile):
    reg = Registry(str(tmp_path / "reg"))
    version = register_version(reg, tmp_path, with_profile=with_profile)
    prof = load_profile(reg, "churn", "production")
    assert prof["version"] == version
    assert prof["prediction"]["kind"] == "categorical"  # the fallback predicts the stored sample
    if not with_profile:
        assert prof["importance"] and abs(sum(prof["importance"].values()) - 1) < 1e-9
    out = run_json("--reference", f"model:churn@{version}", "--current", str(data / "drifted.csv"),
                   "--registry", str(tmp_path / "reg"))
    assert set(out["drifted_columns"]) == DRIFTED
    stable = run_json("--reference", "model:churn", "--current", str(data / "stable.parquet"),
                      env={"KUBELOOP_REGISTRY": str(tmp_path / "reg")})
    assert stable["drifted_columns"] == []


def test_model_reference_unknown_alias(tmp_path):
    reg = Registry(str(tmp_path / "reg"))
    register_version(reg, tmp_path, with_profile=True)
    proc = kubeloop("drift", "--reference", "model:churn@canary", "--current", "x.csv", "--registry", str(tmp_path / "reg"))
    assert proc.returncode == 2 and "canary" in proc.stderr


def test_ids_dates_as_text_and_boolean_spellings(tmp_path):
    # A rising row id and dates written as text change with time by construction:
    # they are listed as skipped, not flagged. Booleans spelled True/False in CSV
    # and true/false in Parquet are the same categories.
    rng = np.random.default_rng(0)
    n = 5000

    def frame(offset: int) -> pd.DataFrame:
        days = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 90, n) + offset, unit="D")
        return pd.DataFrame({"row_id": np.arange(n) + offset * 100, "day": days.strftime("%Y-%m-%d"),
                             "vip": rng.random(n) < 0.2, "x": rng.normal(size=n)})

    write(frame(0), tmp_path / "ref.parquet")
    write(frame(365), tmp_path / "cur.csv")
    out = run_json("--reference", str(tmp_path / "ref.parquet"), "--current", str(tmp_path / "cur.csv"))
    assert out["drifted_columns"] == []
    assert set(out["skipped"]) == {"row_id", "day"}
    assert out["columns"]["vip"]["unseen_rate"] == 0.0


def test_profile_files_compare_with_each_other(data, tmp_path):
    from kubeloop.monitoring.stream import profile_uri

    cfg = Config()
    for name, src in (("ref", "ref.parquet"), ("cur", "drifted.csv"), ("same", "stable.parquet")):
        (tmp_path / f"{name}.json").write_bytes(dumps(profile_uri(str(data / src), cfg.monitoring)))
    out = run_json("--reference", str(tmp_path / "ref.json"), "--current", str(tmp_path / "cur.json"))
    assert set(out["drifted_columns"]) == DRIFTED
    assert run_json("--reference", str(tmp_path / "ref.json"), "--current", str(tmp_path / "same.json"))["drifted_columns"] == []


def test_prediction_logs_as_current_count_only_answered_rows(data, tmp_path):
    from monitor_support import write_log

    df = drift_frame(3000, 8, False)
    status = ["ok"] * 3000
    for i in range(0, 3000, 3):
        status[i] = "invalid_input"  # rejected rows are logged with their inputs nulled
    rejected = pd.Series(status) != "ok"
    logged = df.copy()
    logged.loc[rejected.to_numpy(), NUMERIC + CATEGORICAL] = None
    write_log(tmp_path / "logs", "churn", logged, predictions=["yes"] * 3000, status=status)
    write_log(tmp_path / "logs", "churn", drift_frame(3000, 9, True), predictions=["no"] * 3000, role="shadow")
    out = run_json("--reference", str(data / "ref.parquet"), "--current", str(tmp_path / "logs"))
    assert out["n_current"] == 2000
    assert out["drifted_columns"] == []  # neither the nulled rejections nor the shadow copies count


def test_free_text_and_ids_are_skipped_in_data_references(tmp_path):
    from kubeloop.monitoring.stream import profile_uri

    n = 24_000
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"order": [f"ord-{i:08x}" for i in rng.permutation(n)], "note": [f"text {i}" for i in range(n)],
                       "plan": rng.choice(["a", "b"], n)})
    df.loc[:1999, "note"] = [f"t{i % 50}" for i in range(2000)]  # the first batches look categorical
    write(df, tmp_path / "ref.parquet")
    cfg = Config.from_dict({"monitoring": {"batch_rows": 4096}}).monitoring
    prof = profile_uri(str(tmp_path / "ref.parquet"), cfg)
    assert set(prof["columns"]) == {"plan"}
    assert "identifier or free text" in prof["skipped"]["order"] and "identifier or free text" in prof["skipped"]["note"]
