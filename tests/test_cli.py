"""``kubeloop`` as a user runs it: bad input is refused clearly and changes nothing.

Every bad-input case starts from a registry whose ``production`` alias points at a
model from a good run, runs ``kubeloop run`` on one kind of bad data (or a bad
config or flag), and checks three things: exit code 2, a message on stderr that
names the problem, and a registry that is byte-for-byte what it was before.

The bad tables are made from a fresh batch of the same population; a control
test checks that the batch itself passes validation against the production
schema, so each case fails because of its one defect and nothing else. The cases
run two at a time in one module fixture (``bad_runs``); each test then checks its
own case's outcome.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers_cli import (
    MODEL,
    TARGET,
    TIME_COLUMN,
    GoodRun,
    copy_registry,
    good_churn_run,
    run_args,
    run_cli,
    tree_digest,
    write_config,
    write_csv,
)

from kubeloop import cli
from kubeloop.components.ingest import ingest
from kubeloop.components.validate import validate
from kubeloop.config import ValidationConfig
from kubeloop.datagen import make_churn
from kubeloop.registry import Registry

pytestmark = pytest.mark.slow

BATCH_ROWS = 600
NOTHING_REGISTERED = "Nothing was registered; the production model is unchanged"


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> GoodRun:
    """A registry with churn v1 as production (shared; tests copy it)."""
    return good_churn_run(tmp_path_factory)


def batch() -> pd.DataFrame:
    """The next batch of churn data: same population and time range, new rows."""
    return make_churn(BATCH_ROWS, seed=1)


# --- the bad inputs ------------------------------------------------------------------
# Each maker writes one bad input into a directory and returns the path to pass as
# --data (which may not exist).


def _changed(change: Callable[[pd.DataFrame], pd.DataFrame | None]) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        df = batch()
        out = change(df)
        return write_csv(df if out is None else out, d / "batch.csv")

    return make


_clean = _changed(lambda df: None)


def _bytes(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        path = d / name
        path.write_bytes(data)
        return path

    return make


def _missing_file(d: Path) -> Path:
    return d / "no-such-file.csv"


def _directory(d: Path) -> Path:
    (d / "exports").mkdir()
    write_csv(batch(), d / "exports" / "part-0.csv")
    return d / "exports"


def _header_only(d: Path) -> Path:
    path = d / "batch.csv"
    path.write_text(",".join(batch().columns) + "\n")
    return path


def _json_export(d: Path) -> Path:
    path = d / "batch.json"
    batch().to_json(path, orient="records")
    return path


def _set(column: str, value: object) -> Callable[[pd.DataFrame], None]:
    def change(df: pd.DataFrame) -> None:
        df[column] = value

    return change


def _as_text_with_currency(df: pd.DataFrame) -> None:
    df["monthly_charges"] = "$" + df["monthly_charges"].map("{:.2f}".format)


def _unseen_regions(df: pd.DataFrame) -> None:
    df["region"] = df["region"].astype(object)
    df.loc[: BATCH_ROWS // 5 - 1, "region"] = "atlantis"  # 20 % of the rows


def _target_missing_in_some_rows(df: pd.DataFrame) -> None:
    df[TARGET] = df[TARGET].astype(object)
    df.loc[:9, TARGET] = np.nan


def _duplicates(df: pd.DataFrame) -> pd.DataFrame:
    n = BATCH_ROWS // 10  # 10 % of the rows repeat others exactly (tolerance 5 %)
    return pd.concat([df.iloc[: BATCH_ROWS - n], df.iloc[:n]], ignore_index=True)


def _leaky_feature(df: pd.DataFrame) -> None:
    # An existing feature (same name, same categories) now carries the answer.
    df["paperless_billing"] = df[TARGET].map({"yes": "Yes", "no": "No"}).astype(object)


def _extra_column(df: pd.DataFrame) -> None:
    df["coupon_code"] = np.random.default_rng(0).choice(["A10", "B20", "C30"], len(df))


def _bad_timestamps(df: pd.DataFrame) -> None:
    stamps = df[TIME_COLUMN].dt.strftime("%Y-%m-%dT%H:%M:%S").astype(object)
    stamps.iloc[: BATCH_ROWS // 5] = "last tuesday"
    df[TIME_COLUMN] = stamps


# Not UTF-8 from the first byte on, with a .csv name.
JUNK = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 16


@dataclass(frozen=True)
class Bad:
    make: Callable[[Path], Path]
    expect: str  # a phrase stderr must contain
    flags: tuple[str, ...] = ()
    config: str = ""  # appended to the fast config
    # Refusals say that nothing changed; argparse's own usage errors cannot.
    says_nothing_changed: bool = True


BAD_INPUTS = {
    # files
    "data-file-missing": Bad(_missing_file, "data file not found"),
    "data-is-a-directory": Bad(_directory, "is a directory"),
    "empty-file": Bad(_bytes("batch.csv", b""), "the file is empty"),
    "header-only": Bad(_header_only, "has a header but no rows"),
    "binary-junk-named-csv": Bad(_bytes("batch.csv", JUNK), "cannot parse as CSV: not UTF-8 text"),
    "unsupported-extension": Bad(_json_export, "unsupported format .json"),
    # columns against the production schema
    "target-column-missing": Bad(
        _changed(lambda df: df.drop(columns=[TARGET])), "target column 'churned' is not in the data"
    ),
    "feature-column-missing": Bad(
        _changed(lambda df: df.drop(columns=["tenure_months"])),
        "column 'tenure_months' (feature of the production model) is not in the data",
    ),
    "extra-column": Bad(
        _changed(_extra_column), "column 'coupon_code' is not in the production schema"
    ),
    "numeric-column-now-text": Bad(
        _changed(_as_text_with_currency),
        "column 'monthly_charges' was numeric in the production data",
    ),
    "all-null-column": Bad(_changed(_set("age", np.nan)), "column 'age' is missing in every row"),
    "constant-column-that-varied": Bad(
        _changed(_set("region", "north")),
        "column 'region' has the same value ('north') in every row but varied in the production data",
    ),
    "unseen-categories": Bad(
        _changed(_unseen_regions), "column 'region' has values the production model never saw"
    ),
    "time-column-unparseable": Bad(
        _changed(_bad_timestamps),
        "time column 'signup_date' has 120 rows that are not dates or times",
    ),
    # target
    "target-values-missing": Bad(
        _changed(_target_missing_in_some_rows), "target 'churned' is missing in 10 rows"
    ),
    "single-class-target": Bad(
        _changed(_set(TARGET, "no")), "target 'churned' has a single class ('no')"
    ),
    "leaky-feature": Bad(
        _changed(_leaky_feature), "column 'paperless_billing' alone predicts target 'churned'"
    ),
    "task-changed": Bad(
        _clean,
        "the production model does classification of 'churned'",
        flags=("--task", "regression"),
    ),
    # rows
    "duplicate-rows": Bad(_changed(_duplicates), "repeat another row exactly"),
    "too-few-rows": Bad(
        _changed(lambda df: df.head(30)),
        "the dataset has 30 rows, fewer than validation.min_rows=50",
    ),
    # config and flags
    "config-unknown-key": Bad(
        _clean,
        "config: validation.max_duplicate_frac: unknown key",
        config="validation:\n  max_duplicate_frac: 0.1\n",
    ),
    "config-bad-value": Bad(
        _clean,
        "split fractions train+valid+test must sum to 1",
        config="split:\n  train: 0.8\n  valid: 0.15\n  test: 0.15\n",
    ),
    "gate-metric-typo": Bad(
        _clean,
        "gate.primary_metric 'auc' cannot score any model",
        config="gate:\n  primary_metric: auc\n",
    ),
    # Only the data says the task is classification: refused at validate, before training.
    "gate-metric-of-the-other-task": Bad(
        _clean,
        "gate.primary_metric 'rmse' cannot score a classification model",
        config="gate:\n  primary_metric: rmse\n",
    ),
    "registry-unsupported-scheme": Bad(
        _clean, "unsupported scheme ftp://", flags=("--registry", "ftp://models/registry")
    ),
    "task-flag-bogus": Bad(
        _clean,
        "argument --task: invalid choice: 'bogus'",
        flags=("--task", "bogus"),
        says_nothing_changed=False,
    ),
    "model-name-invalid": Bad(
        _clean,
        "model name 'Churn_Model' must be lowercase letters",
        flags=("--model-name", "Churn_Model"),
    ),
}


@dataclass
class Outcome:
    proc: subprocess.CompletedProcess
    registry: Path
    before: dict[str, str]


def _selected_cases(request) -> list[str]:
    """The bad-input cases pytest is about to run (all of them, or those -k picked)."""
    return [
        item.callspec.params["name"]
        for item in request.session.items
        if item.module is request.module
        and getattr(item, "originalname", None) == test_bad_input_is_refused.__name__
    ]


@pytest.fixture(scope="module")
def bad_runs(request, good: GoodRun, tmp_path_factory) -> dict[str, Outcome]:
    """Each selected case run once, two at a time.

    A case is a few seconds of mostly single-threaded start-up (the command and two
    pipeline steps import their libraries), so two runs share two cores well.
    """
    prepared = {}
    for name in _selected_cases(request):
        case = BAD_INPUTS[name]
        d = tmp_path_factory.mktemp(name)
        registry = copy_registry(good.registry, d / "registry")
        config = write_config(d / "config.yaml", case.config)
        args = run_args(case.make(d), registry, config, *case.flags)
        prepared[name] = (d, registry, tree_digest(registry), args)

    def run(name: str) -> Outcome:
        d, registry, before, args = prepared[name]
        return Outcome(run_cli(args, cwd=d), registry, before)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(prepared, pool.map(run, prepared), strict=True))


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_refused(name: str, bad_runs: dict[str, Outcome]):
    """Exit 2, the problem named on stderr, and the registry byte-for-byte unchanged."""
    case, outcome = BAD_INPUTS[name], bad_runs[name]
    proc = outcome.proc

    assert proc.returncode == 2, proc.stderr
    assert case.expect in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""  # no summary, not even a partial one
    if case.says_nothing_changed:
        assert NOTHING_REGISTERED in proc.stderr
    assert tree_digest(outcome.registry) == outcome.before
    assert Registry(str(outcome.registry)).get_alias(MODEL, "production") == "v1"


def test_the_clean_batch_passes_validation_against_production(good: GoodRun, tmp_path):
    """The control: without its defect, the batch behind the bad cases is fine."""
    df, _ = ingest(write_csv(batch(), tmp_path / "batch.csv"))
    reference = Registry(str(good.registry)).read_json(MODEL, "production", "schema.json")
    result = validate(
        df, target=TARGET, cfg=ValidationConfig(), reference=reference, time_column=TIME_COLUMN
    )
    assert not result.blocking, [a.line() for a in result.anomalies]


# --- registry commands ---------------------------------------------------------------


@pytest.fixture
def registry(good: GoodRun, tmp_path) -> Path:
    return copy_registry(good.registry, tmp_path / "registry")


def _json_out(capsys, *argv: str) -> object:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_registry_list_show_history_print_json(registry: Path, capsys):
    reg = str(registry)
    assert _json_out(capsys, "registry", "list", "--registry", reg, "--json") == [MODEL]

    versions = _json_out(capsys, "registry", "list", MODEL, "--registry", reg, "--json")
    assert [v["version"] for v in versions] == ["v1"]
    assert versions[0]["aliases"] == ["production"]
    assert versions[0]["gate"]["decision"] == "promote"
    assert "roc_auc" in versions[0]["metrics"]

    shown = _json_out(capsys, "registry", "show", MODEL, "--registry", reg, "--json")
    assert shown["aliases"] == ["production"]
    assert shown["uri"].rstrip("/").endswith("/versions/v1/model")
    assert _json_out(capsys, "registry", "show", MODEL, "v1", "--registry", reg, "--json") == shown

    history = _json_out(capsys, "registry", "history", MODEL, "--registry", reg, "--json")
    assert [(h["alias"], h["previous_version"], h["version"]) for h in history] == [
        ("production", None, "v1")
    ]


def test_set_alias_with_a_stale_expectation_exits_3_and_moves_nothing(registry: Path, capsys):
    before = tree_digest(registry)
    code = cli.main(
        ["registry", "set-alias", MODEL, "v1", "--alias", "production", "--expect", "v7",
         "--registry", str(registry)]
    )  # fmt: skip
    _, err = capsys.readouterr()
    assert code == 3
    assert "expected to point at v7 but points at v1" in err
    assert tree_digest(registry) == before


def test_set_alias_with_the_right_expectation_moves_it(registry: Path, capsys):
    code = cli.main(
        ["registry", "set-alias", MODEL, "v1", "--alias", "canary", "--expect", "none",
         "--registry", str(registry), "--json"]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out) == {"model": MODEL, "alias": "canary", "version": "v1"}
    assert Registry(str(registry)).get_alias(MODEL, "canary") == "v1"


@pytest.mark.parametrize(
    "argv, expect",
    [
        (["show", "nosuch"], "no versions of nosuch"),
        (["show", MODEL, "v9"], "v9"),
        (["show", MODEL, "staging"], "churn has no alias 'staging'"),
        (["history"], "a model name is required"),
    ],
    ids=["unknown-model", "unknown-version", "unknown-alias", "no-model-name"],
)
def test_registry_lookups_of_what_does_not_exist_exit_2(registry: Path, capsys, argv, expect):
    code = cli.main(["registry", *argv, "--registry", str(registry)])
    out, err = capsys.readouterr()
    assert code == 2
    assert expect in err
    assert out == ""


def test_compile_to_a_path_that_cannot_be_written_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be\n")
    code = cli.main(["compile", "--output", str(blocker / "pipeline.yaml")])
    _, err = capsys.readouterr()
    assert code == 2
    assert "Traceback" not in err
    assert str(blocker) in err


def test_a_mistyped_registry_path_is_an_error_not_an_empty_list(tmp_path, capsys):
    missing = tmp_path / "regsitry"
    code = cli.main(["registry", "list", "--registry", str(missing)])
    out, err = capsys.readouterr()
    assert code == 2
    assert f"no registry at {missing}" in err
    assert out == ""
    assert not missing.exists()  # reading never creates a registry
