"""`kubeloop submit` and `kubeloop schedule` against a KFP v2 REST endpoint on
loopback (tests/cluster_support.FakeKfp answers the paths kfp.Client 2.x uses),
a closed port, and endpoints that refuse; plus the pure pieces (cron, host,
parameters) as tables."""

import json
import socket
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from kfp import dsl

import kubeloop.pipelines
from kubeloop.cli import main
from kubeloop.commands.schedule import validate_cron
from kubeloop.commands.submit import build_arguments, parse_params, require_cluster_uri
from kubeloop.errors import UserError
from kubeloop.kfp_client import normalize_host
from tests.cluster_support import FakeKfp

IMAGE = "kind.local/kubeloop:0.1.0"
TRAIN = ["--data", "s3://data/churn.csv", "--target", "churned", "--model-name", "churn", "--image", IMAGE]


@pytest.fixture
def kfp_server() -> Iterator[FakeKfp]:
    server = FakeKfp()
    yield server
    server.close()


@pytest.fixture
def closed_port() -> int:
    # Bind and close: the port is free and nothing listens on it.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _executor_images(body: dict[str, Any]) -> set[str]:
    # With a platform spec (kfp-kubernetes settings) the client sends both, wrapped.
    spec = body.get("pipeline_spec", body)
    return {ex["container"]["image"] for ex in spec["deploymentSpec"]["executors"].values()}


# --- pure pieces ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "expr, ok",
    [
        ("0 0 * * * *", True),
        ("0 30 2 * * *", True),
        ("  0  0  6  *  *  MON ", True),
        ("*/15 * * * * ?", True),
        ("0 0 9 ? * 2-6", True),
        ("0 0 0 1,15 JAN-MAR *", True),
        ("0 0/5 8-18 * * MON-FRI", True),
        ("0 0 * * *", False),  # five fields: Unix cron
        ("0 0 0 * * * *", False),  # seven fields
        ("60 0 * * * *", False),  # seconds 0-59
        ("0 0 24 * * *", False),
        ("0 0 0 0 * *", False),  # day of month from 1
        ("0 0 0 * 13 *", False),
        ("0 0 0 * * 7", False),
        ("0 0 0 * * FUNDAY", False),
        ("0 */0 * * * *", False),
        ("0 ? * * * *", False),  # '?' only in the day fields
        ("0 0 5-2 * * *", False),
        ("0 0 * * * * extra", False),
        ("", False),
        ("@daily", False),
    ],
)
def test_validate_cron(expr: str, ok: bool) -> None:
    if ok:
        assert validate_cron(expr) == " ".join(expr.split())
    else:
        with pytest.raises(UserError, match="SIX fields"):
            validate_cron(expr)


def test_five_field_cron_gets_the_six_field_form_suggested() -> None:
    with pytest.raises(UserError, match=r"add seconds first: '0 30 2 \* \* \*'"):
        validate_cron("30 2 * * *")


@pytest.mark.parametrize(
    "host, expected",
    [
        ("http://localhost:8080", "http://localhost:8080"),
        ("http://localhost:8080/", "http://localhost:8080"),
        ("https://kfp.example.com/pipeline/", "https://kfp.example.com/pipeline"),
        ("localhost:8080", None),
        ("ftp://x", None),
        ("http://", None),
        ("http://h:1/?a=b", None),
        ("", None),
    ],
)
def test_normalize_host(host: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(UserError):
            normalize_host(host)
    else:
        assert normalize_host(host) == expected


@pytest.mark.parametrize("uri, ok", [("s3://data/x.csv", True), ("data.csv", False), ("/tmp/x.csv", False),
                                     ("s3://", False), ("gs://b/x", False)])
def test_require_cluster_uri(uri: str, ok: bool) -> None:
    if ok:
        assert require_cluster_uri("--data", uri) == uri
    else:
        with pytest.raises(UserError, match="s3:// URI the cluster can read"):
            require_cluster_uri("--data", uri)


def test_parse_params() -> None:
    assert parse_params(["a=1", "b=x", "c=[1, 2]", "d=", "e=a=b"]) == {"a": 1, "b": "x", "c": [1, 2], "d": "", "e": "a=b"}
    with pytest.raises(UserError, match="NAME=VALUE"):
        parse_params(["novalue"])


SPEC = {"root": {"inputDefinitions": {"parameters": {
    "data_uri": {"parameterType": "STRING"},
    "registry": {"parameterType": "STRING", "defaultValue": "s3://models/registry", "isOptional": True},
    "window_days": {"parameterType": "NUMBER_INTEGER"},
}}}}


@pytest.mark.parametrize(
    "values, extra, expected, error",
    [
        ({"data_uri": "s3://d/x"}, {"window_days": 7}, {"data_uri": "s3://d/x", "window_days": 7}, None),
        # a value kubeloop would send that the pipeline does not declare: an error, never dropped
        ({"data_uri": "s3://d/x", "model_name": "m"}, {"window_days": 7}, None, "declares no parameter model_name"),
        ({"data_uri": "s3://d/x", "registry": None}, {"window_days": 1}, {"data_uri": "s3://d/x", "window_days": 1}, None),
        ({"data_uri": "s3://d/x"}, {}, None, "needs window_days"),
        ({}, {"window_days": 1}, None, "needs data_uri"),
        ({"data_uri": "s3://d/x"}, {"window_days": 1, "windowdays": 2}, None, "no such parameter"),
    ],
)
def test_build_arguments(values, extra, expected, error) -> None:
    if error:
        with pytest.raises(UserError, match=error):
            build_arguments(SPEC, values, extra)
    else:
        assert build_arguments(SPEC, values, extra) == expected


# --- submit ---------------------------------------------------------------------------


@pytest.mark.slow
def test_submit_creates_a_run_on_the_configured_image(kfp_server: FakeKfp, capsys) -> None:
    code, out, err = run_cli(capsys, "submit", "--host", kfp_server.url + "/", *TRAIN, "--json")
    assert code == 0, err
    result = json.loads(out)  # stdout holds the one JSON document, nothing else
    (run,) = kfp_server.posted("/runs")
    assert result["run_id"].startswith("run-")
    assert result["run_url"] == f"{kfp_server.url}/#/runs/details/{result['run_id']}"
    assert run["service_account"] == "kubeloop-pipeline"
    assert run["experiment_id"] == result["experiment_id"]
    params = run["runtime_config"]["parameters"]
    assert params["data_uri"] == "s3://data/churn.csv"
    assert params["model_name"] == "churn"
    assert params["registry"] == "s3://models/registry"
    assert params["config"]["storage"]["endpoint_url"] == "http://minio.kubeloop-storage.svc:9000"
    # A run parameter of its own, never inside config (one source per value).
    assert params["target"] == "churned" and "target" not in params["config"]
    assert params["deploy"] is False
    assert _executor_images(run["pipeline_spec"]) == {IMAGE}
    # Steps get the S3 keys from the Secret by name; no key value travels with the run.
    platform = json.dumps(run["pipeline_spec"]["platform_spec"])
    assert '"secretName": "kubeloop-s3-pipeline"' in platform or '"secretNameParameter"' in platform
    (experiment,) = kfp_server.posted("/experiments")
    assert experiment["display_name"] == "kubeloop"
    assert "Experiment details" in err  # the client's chatter went to stderr


@pytest.mark.slow
def test_submit_reuses_the_experiment_and_prints_the_url(kfp_server: FakeKfp, capsys) -> None:
    for _ in range(2):
        code, out, err = run_cli(capsys, "submit", "--host", kfp_server.url, *TRAIN, "--experiment", "churn-exp",
                                 "--service-account", "")
        assert code == 0, err
        assert out.strip().startswith(f"{kfp_server.url}/#/runs/details/run-")
    assert len(kfp_server.posted("/experiments")) == 1
    runs = kfp_server.posted("/runs")
    assert len(runs) == 2 and runs[0]["experiment_id"] == runs[1]["experiment_id"]
    assert all(r.get("service_account") in (None, "") for r in runs)


def test_submit_to_a_closed_port_is_a_clear_error(closed_port: int, capsys) -> None:
    code, out, err = run_cli(capsys, "submit", "--host", f"http://127.0.0.1:{closed_port}", *TRAIN)
    assert code == 2 and out == ""
    assert "cannot reach the Kubeflow Pipelines endpoint" in err and "connection refused" in err
    assert "port-forward" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "status, words",
    [(401, "needs credentials (HTTP 401"), (403, "refused access (HTTP 403"), (404, "answered 404")],
)
def test_submit_to_a_refusing_endpoint_is_a_clear_error(status: int, words: str, capsys) -> None:
    server = FakeKfp(refuse=status, message="go away")
    try:
        code, out, err = run_cli(capsys, "submit", "--host", server.url, *TRAIN)
    finally:
        server.close()
    assert code == 2 and out == ""
    assert words in err and "go away" in err and "Traceback" not in err
    assert not server.posted("/runs")


@pytest.mark.slow
def test_a_refused_run_names_the_action_and_the_server_message(capsys) -> None:
    server = FakeKfp(refuse=403, refuse_path="/apis/v2beta1/runs", message="runs are read-only here")
    try:
        code, out, err = run_cli(capsys, "submit", "--host", server.url, *TRAIN)
    finally:
        server.close()
    assert code == 2 and out == ""
    assert "creating the run" in err and "runs are read-only here" in err and "HTTP 403" in err


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--data", "churn.csv", "--target", "y"], "s3:// URI the cluster can read"),
        (["--data", "s3://data/x.csv"], "--target is required"),
        (["--data", "s3://data/x.csv", "--target", "y", "--registry", "./registry"], "--registry './registry'"),
        (["--data", "s3://data/x.csv", "--target", "y", "--param", "nope=1"], "no such parameter"),
        (["--data", "s3://data/x.csv", "--target", "y", "--model-name", "Bad_Name"], "model name"),
    ],
)
def test_bad_submit_input_is_refused_before_anything_is_sent(kfp_server: FakeKfp, argv, words, capsys) -> None:
    code, out, err = run_cli(capsys, "submit", "--host", kfp_server.url, *argv)
    assert code == 2, err
    assert words in err and out == ""
    assert kfp_server.requests == []


# --- schedule -------------------------------------------------------------------------


@pytest.mark.slow
def test_schedule_training_creates_a_recurring_run(kfp_server: FakeKfp, capsys) -> None:
    code, out, err = run_cli(capsys, "schedule", "training", "--cron", "0 0 3 * * *", "--host", kfp_server.url,
                             *TRAIN, "--json")
    assert code == 0, err
    result = json.loads(out)
    (job,) = kfp_server.posted("/recurringruns")
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
    assert job["max_concurrency"] in (1, "1")
    assert job["no_catchup"] is True
    assert job["mode"] == "ENABLE"
    assert job["service_account"] == "kubeloop-pipeline"
    assert _executor_images(job["pipeline_spec"]) == {IMAGE}
    assert result["recurring_run_url"] == f"{kfp_server.url}/#/recurringrun/details/{result['recurring_run_id']}"
    assert result["cron"] == "0 0 3 * * *"


@pytest.mark.parametrize("cron", ["0 3 * * *", "0 0 25 * * *", "every day"])
def test_schedule_refuses_a_bad_cron_before_anything_is_sent(kfp_server: FakeKfp, cron: str, capsys) -> None:
    code, out, err = run_cli(capsys, "schedule", "training", "--cron", cron, "--host", kfp_server.url, *TRAIN)
    assert code == 2 and out == ""
    assert "SIX fields" in err
    assert kfp_server.requests == []


def test_schedule_help_says_kfp_cron_has_six_fields(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["schedule", "--help"])
    assert "six fields, seconds first".lower() in capsys.readouterr().out.lower()


def test_schedule_monitoring_without_the_monitoring_pipeline(kfp_server, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "kubeloop.pipelines.monitoring", None)
    monkeypatch.delattr(kubeloop.pipelines, "monitoring", raising=False)
    code, out, err = run_cli(capsys, "schedule", "monitoring", "--cron", "0 0 6 * * *", "--host", kfp_server.url,
                             "--model-name", "churn", "--logs", "s3://logs/predictions")
    assert code == 2 and out == ""
    assert "no monitoring pipeline" in err and "kubeloop.pipelines.monitoring" in err
    assert kfp_server.requests == []


# A stand-in monitoring pipeline with the parameters such a pipeline has; the real
# one lives in kubeloop.pipelines.monitoring.
@dsl.component(base_image="python:3.11-slim", install_kfp_package=False)
def _check(registry: str, model_name: str, window_days: int) -> str:
    return f"{registry}/{model_name}/{window_days}"


def test_schedule_monitoring_passes_what_the_pipeline_declares(kfp_server, capsys) -> None:
    code, out, err = run_cli(capsys, "schedule", "monitoring", "--cron", "0 0 6 * * MON", "--host", kfp_server.url,
                             "--model-name", "churn", "--target", "churned", "--image", IMAGE,
                             "--logs", "s3://logs/predictions", "--labels", "s3://data/labels/",
                             "--data", "s3://data/churn-latest.parquet", "--window-hours", "48", "--deploy", "--json")
    assert code == 0, err
    (job,) = kfp_server.posted("/recurringruns")
    params = job["runtime_config"]["parameters"]
    assert params["logs_uri"] == "s3://logs/predictions"
    # every flag reached a parameter of the monitoring pipeline
    assert params["labels_uri"] == "s3://data/labels/"
    assert params["retrain_data_uri"] == "s3://data/churn-latest.parquet"
    assert params["window_hours"] == 48 and params["deploy"] is True
    assert "data_uri" not in params
    assert (params["registry"], params["model_name"], params["target"]) == (
        "s3://models/registry", "churn", "churned")
    assert "target" not in params["config"]  # one source per value
    assert _executor_images(job["pipeline_spec"]) == {IMAGE}
    assert json.loads(out)["name"] == "churn monitoring"


@pytest.mark.parametrize(
    "argv, words",
    [
        ([], "needs --logs"),
        (["--logs", "logs/predictions"], "must be an s3:// URI"),
        # retraining needs a target: found now, not when a retrain triggers weeks later
        (["--logs", "s3://logs/p", "--data", "s3://data/x.csv"], "--target is required"),
        (["--logs", "s3://logs/p", "--param", "windowhours=3"], "no such parameter"),
    ],
)
def test_schedule_monitoring_refuses_what_it_cannot_run(kfp_server, argv, words, capsys) -> None:
    code, out, err = run_cli(capsys, "schedule", "monitoring", "--cron", "0 0 6 * * *", "--host", kfp_server.url,
                             "--model-name", "churn", *argv)
    assert code == 2 and words in err, err
    assert out == "" and kfp_server.requests == []


def test_schedule_monitoring_without_data_says_it_never_retrains(kfp_server, capsys) -> None:
    code, out, err = run_cli(capsys, "schedule", "monitoring", "--cron", "0 0 6 * * *", "--host", kfp_server.url,
                             "--model-name", "churn", "--logs", "s3://logs/predictions", "--json")
    assert code == 0, err
    assert "never retrain" in err
    (job,) = kfp_server.posted("/recurringruns")
    assert "retrain_data_uri" not in job["runtime_config"]["parameters"]


def test_schedule_training_refuses_monitoring_flags(kfp_server, capsys) -> None:
    code, out, err = run_cli(capsys, "schedule", "training", "--cron", "0 0 6 * * *", "--host", kfp_server.url,
                             *TRAIN, "--logs", "s3://logs/p")
    assert code == 2 and "--logs is for `kubeloop schedule monitoring`" in err
    assert kfp_server.requests == []


@pytest.mark.slow
def test_submit_takes_the_image_from_the_config(kfp_server: FakeKfp, tmp_path, capsys) -> None:
    config = tmp_path / "cluster.yaml"
    config.write_text("image: dev.local/kubeloop:9.9.9\ntarget: churned\nmodel_name: churn\n")
    code, out, err = run_cli(capsys, "submit", "--host", kfp_server.url, "--config", str(config),
                             "--data", "s3://data/churn.csv", "--json")
    assert code == 0, err
    (run,) = kfp_server.posted("/runs")
    assert _executor_images(run["pipeline_spec"]) == {"dev.local/kubeloop:9.9.9"}
    assert json.loads(out)["image"] == "dev.local/kubeloop:9.9.9"
