"""The train stage: every family on both tasks, the search, the baseline, selection,
the leaderboard, the served model and the errors, on realistic sample data."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_info, threadpool_limits

from kubeloop.components import train as train_module
from kubeloop.components.features import (
    build_feature_transformer,
    categorical_output_columns,
    fit_features,
)
from kubeloop.components.train import (
    BASELINE,
    FAMILIES,
    CandidateResult,
    TrainError,
    baseline_candidate,
    candidate_to_dict,
    compose_model,
    leaderboard,
    leaderboard_markdown,
    make_head,
    model_inputs,
    score,
    search_family,
    search_settings,
    select_best,
    subsample_rows,
    train_candidate,
)
from kubeloop.components.validate import infer_schema
from kubeloop.config import TrainConfig, ValidationConfig
from kubeloop.datagen import make_churn, make_house_prices
from kubeloop.metric_names import higher_is_better

TASKS = ("classification", "regression")
METRIC = {"classification": "roc_auc", "regression": "rmse"}
N_TRAIN, N_VALID, N_TEST = 1200, 400, 400
SEARCH_ROWS = 800  # below N_TRAIN: the search subsamples, the winner is refitted


class Data:
    """One sample dataset split by hand, its schema and the fitted features step."""

    def __init__(self, df: pd.DataFrame, schema: dict) -> None:
        self.schema = schema
        self.task = schema["task"]
        self.metric = METRIC[self.task]
        self.positive_label = schema.get("positive_label")
        self.train = df.iloc[:N_TRAIN]
        self.valid = df.iloc[N_TRAIN : N_TRAIN + N_VALID]
        self.test = df.iloc[N_TRAIN + N_VALID :]
        self.transformer = fit_features(self.train, schema)
        self.X_train, self.y_train = model_inputs(self.train, self.transformer, schema)
        self.X_valid, self.y_valid = model_inputs(self.valid, self.transformer, schema)
        self.X_test, self.y_test = model_inputs(self.test, self.transformer, schema)
        self.cats = categorical_output_columns(self.X_train.columns)

    def search(self, family: str, cfg: TrainConfig, **kwargs) -> CandidateResult:
        return search_family(
            family,
            self.X_train,
            self.y_train,
            self.X_valid,
            self.y_valid,
            task=self.task,
            metric=self.metric,
            cfg=cfg,
            positive_label=self.positive_label,
            **kwargs,
        )

    def score(self, estimator, X: pd.DataFrame, y) -> float:
        return score(
            self.metric, estimator, X, y, task=self.task, positive_label=self.positive_label
        )


def churn_data(n: int = N_TRAIN + N_VALID + N_TEST, seed: int = 3) -> Data:
    df = make_churn(n, seed=seed)
    schema = infer_schema(
        df,
        target="churned",
        time_column="signup_date",
        id_column="customer_id",
        positive_label="yes",
        cfg=ValidationConfig(),
    )
    return Data(df, schema)


def house_data(n: int = N_TRAIN + N_VALID + N_TEST, seed: int = 3) -> Data:
    df = make_house_prices(n, seed=seed)
    schema = infer_schema(df, target="price", id_column="listing_id", cfg=ValidationConfig())
    return Data(df, schema)


@pytest.fixture(scope="module")
def churn() -> Data:
    return churn_data()


@pytest.fixture(scope="module")
def house() -> Data:
    return house_data()


@pytest.fixture(scope="module")
def datasets(churn, house) -> dict[str, Data]:
    return {"classification": churn, "regression": house}


def test_sample_data_has_what_the_heads_expect(churn, house):
    for data in (churn, house):
        assert set(data.X_train.dtypes) == {np.dtype("float32")}
        assert data.cats, "the sample data has categorical columns"
        assert data.X_train[data.cats].isna().any().any(), "missing categories stay NaN"
    assert churn.task == "classification" and churn.positive_label == "yes"
    assert house.task == "regression"


# ---------------------------------------------------------------------------
# search_family: every family on both tasks


def _predictions(estimator, X: pd.DataFrame, task: str) -> np.ndarray:
    return estimator.predict_proba(X) if task == "classification" else estimator.predict(X)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("family", FAMILIES)
def test_search_family_fits_every_family(datasets, family, task):
    data = datasets[task]
    cfg = TrainConfig(search_iterations=2, search_max_rows=SEARCH_ROWS, seed=0)
    result = data.search(family, cfg)

    assert isinstance(result, CandidateResult)
    assert (result.family, result.task, result.metric) == (family, task, data.metric)
    assert math.isfinite(result.valid_score)
    # The first setting tried is the family's defaults, then a random draw.
    assert 1 <= len(result.search) <= 2
    assert result.search[0]["params"] == search_settings(family, task, 1, cfg.seed)[0]
    for entry in result.search:
        assert "error" not in entry, entry
        assert math.isfinite(entry["score"]) and entry["fit_seconds"] >= 0
    assert result.params in [e["params"] for e in result.search]

    # The search ran on a subsample; the winner was refitted on every training row.
    assert result.n_search_rows == SEARCH_ROWS
    assert result.n_train_rows == len(data.X_train) == N_TRAIN
    assert result.n_valid_rows == result.n_search_valid_rows == len(data.X_valid)
    with threadpool_limits(1):  # as the search fits: many threads only add overhead here
        refit = make_head(family, task, data.cats, result.params, cfg.seed).fit(
            data.X_train, data.y_train
        )
    np.testing.assert_allclose(
        _predictions(result.estimator, data.X_test, task),
        _predictions(refit, data.X_test, task),
        rtol=1e-6,
        atol=1e-9,
    )
    # The reported score is the refitted head's score on the whole validation split.
    assert result.valid_score == pytest.approx(
        data.score(result.estimator, data.X_valid, data.y_valid), rel=1e-12
    )
    # The record is JSON as it stands (no NaN, no numpy scalars).
    json.dumps(candidate_to_dict(result), allow_nan=False)


def _best(metric: str, scores: list[float]) -> float:
    return max(scores) if higher_is_better(metric) else min(scores)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("family", FAMILIES)
def test_search_never_ends_worse_than_the_defaults(datasets, family, task):
    data = datasets[task]
    # No subsample: the search model is the final model and its score the final score.
    cfg = TrainConfig(search_iterations=3, seed=1)
    result = data.search(family, cfg)
    scores = [e["score"] for e in result.search]
    assert result.n_search_rows == result.n_train_rows == N_TRAIN
    assert result.valid_score == _best(data.metric, scores)
    assert result.params == result.search[scores.index(result.valid_score)]["params"]
    defaults = scores[0]
    if higher_is_better(data.metric):
        assert result.valid_score >= defaults
    else:
        assert result.valid_score <= defaults


def test_defaults_are_kept_on_a_tie(churn):
    # A tie by construction: lbfgs never reads random_state, so all three settings
    # fit the same model from the same inputs and score exactly alike on any CPU
    # and BLAS kernel. (Settings that only *should* converge to the same optimum,
    # such as a higher max_iter, differ in the last bits from one kernel to another.)
    cfg = TrainConfig(search_iterations=3, seed=0)
    result = churn.search("linear", cfg, space={"random_state": [1, 2]})
    scores = [e["score"] for e in result.search]
    assert len(scores) == 3 and len(set(scores)) == 1
    assert result.params == {"random_state": None}


def test_a_failing_setting_is_recorded_and_skipped(house):
    cfg = TrainConfig(search_iterations=2, seed=0)
    result = house.search("linear", cfg, space={"alpha": [-1.0]})
    assert len(result.search) == 2
    assert result.search[1]["score"] is None
    assert "alpha" in result.search[1]["error"]
    assert result.params == {"alpha": 1.0}
    assert math.isfinite(result.valid_score)


@pytest.mark.parametrize(
    "family,task", [("hist_gradient_boosting", "classification"), ("random_forest", "regression")]
)
def test_search_is_deterministic_for_a_seed(datasets, family, task):
    data = datasets[task]
    cfg = TrainConfig(search_iterations=3, search_max_rows=500, seed=0)
    first, second = data.search(family, cfg), data.search(family, cfg)
    assert first.params == second.params
    assert [e["params"] for e in first.search] == [e["params"] for e in second.search]
    # Forests add up their trees' predictions in whatever order the threads finish,
    # so scores agree to the last few bits rather than exactly.
    assert first.valid_score == pytest.approx(second.valid_score, rel=1e-12)
    assert [e["score"] for e in first.search] == pytest.approx(
        [e["score"] for e in second.search], rel=1e-12
    )
    np.testing.assert_allclose(
        _predictions(first.estimator, data.X_test, task),
        _predictions(second.estimator, data.X_test, task),
        rtol=1e-12,
    )


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("task", TASKS)
def test_search_settings_defaults_first_then_distinct_seeded_draws(family, task):
    settings = search_settings(family, task, 6, seed=11)
    assert settings == search_settings(family, task, 6, seed=11)
    assert settings[1:] != search_settings(family, task, 6, seed=12)[1:]
    assert 2 <= len(settings) <= 6
    assert all(settings.count(s) == 1 for s in settings)
    defaults = make_head(family, task, []).get_params()
    assert all(defaults[k] == v for k, v in settings[0].items())
    assert search_settings(family, task, 1, seed=11) == settings[:1]
    json.dumps(settings, allow_nan=False)


def test_search_settings_small_grid_is_not_overdrawn():
    settings = search_settings("random_forest", "regression", 50, 0, space={"max_depth": [3, 5]})
    assert settings[0] == {"max_depth": None}
    assert sorted(s["max_depth"] for s in settings[1:]) == [3, 5]


# ---------------------------------------------------------------------------
# Subsampling


def test_search_subsample_is_capped_and_keeps_every_class(churn):
    cfg = TrainConfig(search_iterations=1, search_max_rows=150, search_valid_max_rows=100)
    result = churn.search("linear", cfg)
    assert result.n_search_rows == 150
    assert result.n_search_valid_rows == 100
    assert result.n_train_rows == N_TRAIN and result.n_valid_rows == N_VALID
    kept = subsample_rows(churn.y_train, 150, stratify=True, seed=cfg.seed)
    sub = churn.y_train[kept]
    assert set(sub) == set(churn.y_train)
    share = np.mean(churn.y_train == "yes")
    assert np.sum(sub == "yes") == pytest.approx(share * 150, abs=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_subsample_rows_is_stratified_and_sorted(seed):
    rng = np.random.default_rng(seed)
    y = rng.choice(np.array(["a", "b", "c"]), size=2000, p=[0.85, 0.1, 0.05])
    kept = subsample_rows(y, 200, stratify=True, seed=seed)
    assert len(kept) == 200 and len(set(kept)) == 200
    assert np.all(np.diff(kept) > 0)
    for label in "abc":
        assert np.sum(y[kept] == label) == pytest.approx(np.mean(y == label) * 200, abs=1)
    np.testing.assert_array_equal(kept, subsample_rows(y, 200, stratify=True, seed=seed))


def test_subsample_rows_edge_cases():
    y = np.array(["a"] * 500 + ["b"])  # "b" has one row: cannot be stratified
    kept = subsample_rows(y, 100, stratify=True, seed=0)
    assert len(kept) == 100
    assert subsample_rows(y, 501, stratify=True, seed=0) is None
    assert subsample_rows(np.arange(10.0), 10, stratify=False, seed=0) is None
    assert len(subsample_rows(np.arange(10.0), 3, stratify=False, seed=0)) == 3


# ---------------------------------------------------------------------------
# Baseline


def test_baseline_classification_predicts_the_priors(churn):
    result = baseline_candidate(
        churn.X_train,
        churn.y_train,
        churn.X_valid,
        churn.y_valid,
        task="classification",
        metric="roc_auc",
        positive_label="yes",
    )
    assert result.family == BASELINE
    assert result.params == {"strategy": "prior"}
    assert result.valid_score == pytest.approx(0.5)
    assert result.n_train_rows == N_TRAIN and result.search == []
    proba = result.estimator.predict_proba(churn.X_test)
    prior = np.mean(churn.y_train == "yes")
    yes = list(result.estimator.classes_).index("yes")
    np.testing.assert_allclose(proba[:, yes], prior)
    json.dumps(candidate_to_dict(result), allow_nan=False)

    tuned = churn.search("linear", TrainConfig(search_iterations=1))
    assert tuned.valid_score > result.valid_score + 0.2


def test_baseline_regression_predicts_the_mean(house):
    result = baseline_candidate(
        house.X_train,
        house.y_train,
        house.X_valid,
        house.y_valid,
        task="regression",
        metric="rmse",
    )
    assert result.params == {"strategy": "mean"}
    mean = float(np.mean(house.y_train))
    np.testing.assert_allclose(result.estimator.predict(house.X_test), mean)
    expected = math.sqrt(np.mean((house.y_valid.astype(float) - mean) ** 2))
    assert result.valid_score == pytest.approx(expected, rel=1e-9)

    tuned = house.search("linear", TrainConfig(search_iterations=1))
    assert tuned.valid_score < 0.8 * result.valid_score


# ---------------------------------------------------------------------------
# select_best


def rec(family: str, value, metric: str = "roc_auc", fit_seconds: float = 1.0, **extra) -> dict:
    return {"family": family, "metric": metric, "valid_score": value, "fit_seconds": fit_seconds, **extra}


SELECT_CASES = [
    # (metric, candidates, expected index)
    ("roc_auc", [rec("linear", 0.80), rec("hist_gradient_boosting", 0.85), rec("random_forest", 0.83)], 1),
    ("rmse", [rec("linear", 10.0, "rmse"), rec("hist_gradient_boosting", 8.0, "rmse"), rec("extra_trees", 9.0, "rmse")], 1),
    ("log_loss", [rec("linear", 0.41, "log_loss"), rec("random_forest", 0.39, "log_loss"), rec("extra_trees", 0.45, "log_loss")], 1),
    ("r2", [rec("linear", -0.5, "r2"), rec("random_forest", 0.2, "r2")], 1),
    # The baseline is never selected, even with the best score.
    ("roc_auc", [rec(BASELINE, 0.99), rec("linear", 0.70)], 1),
    ("rmse", [rec(BASELINE, 1.0, "rmse"), rec("random_forest", 5.0, "rmse")], 1),
    # Ties go to the earlier family in FAMILIES, whatever the list order.
    ("roc_auc", [rec("extra_trees", 0.8), rec("random_forest", 0.8), rec("linear", 0.8)], 2),
    ("rmse", [rec("random_forest", 3.0, "rmse", 0.1), rec("hist_gradient_boosting", 3.0, "rmse", 9.0)], 1),
    # Equal to 12 decimals is a tie.
    ("roc_auc", [rec("random_forest", 0.8 + 1e-14), rec("linear", 0.8)], 1),
    ("roc_auc", [rec("random_forest", 0.8 + 1e-9), rec("linear", 0.8)], 0),
    # Same family: the shorter fit; an unknown fit time counts as the longest.
    ("roc_auc", [rec("random_forest", 0.8, fit_seconds=5.0), rec("random_forest", 0.8, fit_seconds=1.0)], 1),
    ("roc_auc", [rec("linear", 0.8, fit_seconds=None), rec("linear", 0.8, fit_seconds=30.0)], 1),
    # Unknown families rank after the known ones on a tie.
    ("roc_auc", [rec("custom", 0.8), rec("extra_trees", 0.8)], 1),
    # NaN, None, infinities, booleans and text never win.
    ("roc_auc", [rec("linear", float("nan")), rec("hist_gradient_boosting", None), rec("random_forest", 0.6)], 2),
    ("rmse", [rec("linear", -math.inf, "rmse"), rec("random_forest", 7.0, "rmse")], 1),
    ("roc_auc", [rec("linear", True), rec("extra_trees", "nan"), rec("random_forest", "0.7")], 2),
    # A record without a metric is taken to be scored with the selection metric.
    ("roc_auc", [{"family": "linear", "valid_score": 0.7}, rec("random_forest", 0.6)], 0),
]


@pytest.mark.parametrize("metric,candidates,expected", SELECT_CASES)
def test_select_best(metric, candidates, expected):
    assert select_best(candidates, metric) == expected


@pytest.mark.parametrize(
    "candidates,words",
    [
        ([], ["no model family produced a usable roc_auc score"]),
        ([rec(BASELINE, 0.5)], ["no model family produced a usable roc_auc score"]),
        (
            [rec("linear", float("nan")), rec("random_forest", None, error="fit exploded")],
            ["usable roc_auc", "linear: score nan", "random_forest: fit exploded"],
        ),
    ],
    ids=["empty", "baseline-only", "all-unusable"],
)
def test_select_best_without_a_usable_score_says_why(candidates, words):
    with pytest.raises(TrainError) as info:
        select_best(candidates, "roc_auc")
    for word in words:
        assert word in str(info.value)


def test_select_best_refuses_a_candidate_scored_with_another_metric():
    candidates = [rec("linear", 0.8), rec("random_forest", 12.0, "rmse")]
    with pytest.raises(TrainError, match=r"candidate 1 \(random_forest\) was scored with 'rmse'"):
        select_best(candidates, "roc_auc")


# ---------------------------------------------------------------------------
# Leaderboard


def test_leaderboard_best_first_in_both_directions_unusable_last():
    up = [rec("linear", 0.7), rec("random_forest", None), rec("extra_trees", 0.9), rec(BASELINE, 0.5)]
    assert [r["family"] for r in leaderboard(up, "roc_auc")] == [
        "extra_trees",
        "linear",
        BASELINE,
        "random_forest",
    ]
    down = [
        rec("linear", 7.0, "rmse"),
        rec("random_forest", float("nan"), "rmse"),
        rec("extra_trees", 3.0, "rmse"),
        rec(BASELINE, 20.0, "rmse"),
    ]
    assert [r["family"] for r in leaderboard(down, "rmse")] == [
        "extra_trees",
        "linear",
        BASELINE,
        "random_forest",
    ]


@pytest.mark.parametrize("metric,candidates,expected", SELECT_CASES)
def test_leaderboard_ranks_the_selected_candidate_first(metric, candidates, expected):
    ranked = leaderboard(candidates, metric)
    non_baseline = [r for r in ranked if r["family"] != BASELINE]
    assert non_baseline[0] is candidates[expected]


def test_leaderboard_markdown_ranks_marks_the_choice_and_shows_na():
    records = [
        rec("linear", 7.0, "rmse", params={"alpha": 0.5}, search=[{}, {}], search_seconds=1.34),
        rec("random_forest", None, "rmse", fit_seconds=None),
        rec("hist_gradient_boosting", 3.0, "rmse", params={"max_iter": 100}),
        rec(BASELINE, 20.0, "rmse", params={"strategy": "mean"}),
    ]
    chosen = records[select_best(records, "rmse")]["family"]
    text = leaderboard_markdown(records, "rmse", chosen=chosen)
    lines = text.strip().splitlines()
    assert lines[0] == "# Candidates on the validation split (rmse)"
    rows = [line for line in lines if line.startswith("| ") and line[2].isdigit()]
    assert [r.split("|")[1].strip() for r in rows] == ["1", "2", "3", "4"]
    assert rows[0].startswith("| 1 | hist_gradient_boosting **(chosen)** | 3.0000 |")
    assert "max_iter=100" in rows[0]
    assert rows[1].startswith("| 2 | linear | 7.0000 | 2 | 1.3 | 1.0 |") and "alpha=0.5" in rows[1]
    assert rows[2].startswith("| 3 | baseline | 20.0000 |")
    assert rows[3].startswith("| 4 | random_forest | n/a |")
    assert text.count("(chosen)") == 1


# ---------------------------------------------------------------------------
# compose_model


@pytest.fixture(scope="module")
def linear_head(churn):
    with threadpool_limits(1):
        return make_head("linear", "classification", churn.cats).fit(churn.X_train, churn.y_train)


def test_compose_model_predicts_on_raw_frames(churn, linear_head):
    served = compose_model(churn.transformer, linear_head)
    assert isinstance(served, Pipeline)
    assert [name for name, _ in served.steps] == ["features", "model"]
    raw = churn.test.drop(columns=["churned"])
    np.testing.assert_allclose(
        served.predict_proba(raw), linear_head.predict_proba(churn.X_test), rtol=1e-12
    )
    assert list(served.predict(raw.iloc[:5])) == list(linear_head.predict(churn.X_test.iloc[:5]))


def test_compose_model_refuses_unfitted_parts(churn, linear_head):
    unfitted_features = build_feature_transformer(churn.schema)
    with pytest.raises(TrainError, match="features step must be fitted"):
        compose_model(unfitted_features, linear_head)
    with pytest.raises(TrainError, match="model must be fitted"):
        compose_model(churn.transformer, make_head("linear", "classification", churn.cats))


@pytest.mark.parametrize("family", ["linear", "hist_gradient_boosting"])
def test_compose_model_refuses_a_head_trained_on_other_columns(churn, family):
    dropped = "num__age"
    X = churn.X_train.drop(columns=[dropped])
    params = None if family == "linear" else {"max_iter": 5}
    with threadpool_limits(1):
        head = make_head(family, "classification", churn.cats, params).fit(X, churn.y_train)
    with pytest.raises(TrainError, match="trained on other columns"):
        compose_model(churn.transformer, head)
    reordered = churn.X_train[list(reversed(churn.X_train.columns))]
    with threadpool_limits(1):
        head = make_head(family, "classification", churn.cats, params).fit(reordered, churn.y_train)
    with pytest.raises(TrainError, match="trained on other columns"):
        compose_model(churn.transformer, head)


# ---------------------------------------------------------------------------
# train_candidate: split frames in, served model and record out


@pytest.fixture(scope="module")
def unlabelled(churn):
    """The churn splits with a few targets missing, as an unlabelled backlog looks."""
    train, valid = churn.train.copy(), churn.valid.copy()
    train.loc[train.index[[0, 5, 17]], "churned"] = np.nan
    valid.loc[valid.index[[1, 2]], "churned"] = np.nan
    return train, valid


def test_model_inputs_skips_rows_without_a_target(churn, unlabelled):
    train, _ = unlabelled
    X, y = model_inputs(train, churn.transformer, churn.schema)
    assert len(X) == len(y) == N_TRAIN - 3
    assert not pd.isna(y).any()
    assert list(X.index) == list(train.index[train["churned"].notna()])
    np.testing.assert_array_equal(X.to_numpy(), churn.X_train.drop(index=train.index[[0, 5, 17]]).to_numpy())


@pytest.mark.parametrize("family", ["linear", "hist_gradient_boosting", BASELINE])
def test_train_candidate_end_to_end(churn, unlabelled, family):
    train, valid = unlabelled
    cfg = TrainConfig(search_iterations=2, search_max_rows=600, seed=0)
    served, record = train_candidate(
        family, train, valid, churn.transformer, churn.schema, cfg, metric="roc_auc"
    )
    assert isinstance(served, Pipeline)
    assert served.named_steps["features"] is churn.transformer
    json.loads(json.dumps(record, allow_nan=False))
    assert record["family"] == family and record["task"] == "classification"
    assert record["metric"] == "roc_auc"
    assert record["n_train_rows"] == N_TRAIN - 3
    assert record["n_valid_rows"] == N_VALID - 2
    assert 0.0 <= record["valid_score"] <= 1.0
    if family == BASELINE:
        assert record["valid_score"] == pytest.approx(0.5)
    else:
        assert record["valid_score"] > 0.75
        assert record["n_search_rows"] == 600

    raw_test = churn.test.drop(columns=["churned"])
    proba = served.predict_proba(raw_test)
    assert proba.shape == (len(raw_test), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    # The record's score is the served model's score on the raw validation rows.
    labelled = valid[valid["churned"].notna()]
    assert record["valid_score"] == pytest.approx(
        score("roc_auc", served, labelled, labelled["churned"].to_numpy(), task="classification", positive_label="yes"),
        rel=1e-9,
    )


def test_train_candidate_regression(house):
    cfg = TrainConfig(search_iterations=2, seed=0)
    served, record = train_candidate(
        "random_forest", house.train, house.valid, house.transformer, house.schema, cfg, metric="mae"
    )
    json.dumps(record, allow_nan=False)
    assert record["metric"] == "mae" and record["task"] == "regression"
    prices = served.predict(house.test.drop(columns=["price"]))
    assert prices.shape == (N_TEST,) and np.all(np.isfinite(prices)) and np.all(prices > 0)


# ---------------------------------------------------------------------------
# Threads


def _openmp_threads() -> list[int]:
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "openmp"]


def test_small_inputs_fit_and_score_on_one_thread(churn, monkeypatch):
    with train_module._threads(churn.X_train):
        assert set(_openmp_threads()) <= {1}
    big = np.empty((train_module.SINGLE_THREAD_CELLS // 10, 10), dtype=np.float32)
    before = _openmp_threads()
    with train_module._threads(big):
        assert _openmp_threads() == before

    limits = []
    # _threads lives in the scoring module: spy on the name it calls.
    real = train_module.scoring.threadpool_limits

    def spy(*args, **kwargs):
        limits.append(kwargs.get("limits", args[0] if args else None))
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module.scoring, "threadpool_limits", spy)
    cfg = TrainConfig(search_iterations=2, search_max_rows=SEARCH_ROWS, seed=0)
    churn.search("hist_gradient_boosting", cfg, space={"max_iter": [10]})
    # Two search fits, two search scores, the refit and its score.
    assert limits == [1] * 6


# ---------------------------------------------------------------------------
# Bad input


def _small(data: Data) -> dict:
    return {
        "X_train": data.X_train.iloc[:200],
        "y_train": data.y_train[:200],
        "X_valid": data.X_valid.iloc[:100],
        "y_valid": data.y_valid[:100],
    }


def _drop_cat(X: pd.DataFrame) -> pd.DataFrame:
    return X.drop(columns=[c for c in X.columns if c.startswith("cat__")][:1])


def _with_nan(X: pd.DataFrame, column: str) -> pd.DataFrame:
    X = X.copy()
    X.iloc[3, X.columns.get_loc(column)] = np.nan
    return X


BAD_INPUTS = [
    # (id, dataset, change to search_family's arguments, expected message)
    ("unknown-family", "classification", {"family": "xgboost"}, r"unknown model family 'xgboost'; known: \['linear'"),
    ("unknown-task", "classification", {"task": "ranking"}, r"task must be one of \['classification', 'regression'\], got 'ranking'"),
    ("metric-of-regression", "classification", {"metric": "rmse"}, r"metric 'rmse' cannot score classification"),
    ("metric-of-classification", "regression", {"metric": "roc_auc"}, r"metric 'roc_auc' cannot score regression"),
    ("unknown-metric", "regression", {"metric": "rsme"}, r"metric 'rsme' cannot score regression; choose one of \['mae', 'rmse', 'r2'\]"),
    ("empty-train", "classification", {"X_train": lambda a: a["X_train"].iloc[:0], "y_train": lambda a: a["y_train"][:0]}, r"X_train has no rows"),
    ("empty-valid", "regression", {"X_valid": lambda a: a["X_valid"].iloc[:0], "y_valid": lambda a: a["y_valid"][:0]}, r"X_valid has no rows"),
    ("no-columns", "regression", {"X_train": lambda a: a["X_train"].iloc[:, :0]}, r"X_train has no columns"),
    ("short-y", "classification", {"y_train": lambda a: a["y_train"][:-1]}, r"y_train has 199 values but its frame has 200 rows"),
    ("long-y", "regression", {"y_valid": lambda a: np.append(a["y_valid"], 1.0)}, r"y_valid has 101 values but its frame has 100 rows"),
    ("y-two-columns", "regression", {"y_train": lambda a: np.c_[a["y_train"], a["y_train"]]}, r"y_train must be one column"),
    ("single-class", "classification", {"y_train": lambda a: np.full(200, "no", dtype=object)}, r"y_train holds a single class \['no'\]; classification needs at least two"),
    ("valid-label-unseen", "classification", {"y_valid": lambda a: np.where(np.arange(100) == 0, "maybe", a["y_valid"])}, r"y_valid has labels that are not in y_train: \['maybe'\]"),
    ("missing-target", "regression", {"y_train": lambda a: np.where(np.arange(200) < 2, np.nan, a["y_train"])}, r"y_train has 2 missing target values"),
    ("text-target", "regression", {"y_train": lambda a: np.full(200, "cheap", dtype=object)}, r"y_train must be numeric for regression; found values like \['cheap'\]"),
    ("infinite-target", "regression", {"y_valid": lambda a: np.where(np.arange(100) == 0, np.inf, a["y_valid"])}, r"y_valid has infinite values"),
    ("not-a-frame", "classification", {"X_train": lambda a: a["X_train"].to_numpy()}, r"X_train must be a pandas DataFrame \(the features step's output\), got ndarray"),
    ("raw-columns", "classification", {"X_train": lambda a: a["X_train"].assign(region="north")}, r"X_train columns \['region'\] are not numeric"),
    ("nan-numeric", "regression", {"X_train": lambda a: _with_nan(a["X_train"], "num__sqft")}, r"X_train has missing or infinite values in \['num__sqft'\]"),
    ("valid-columns", "classification", {"X_valid": lambda a: _drop_cat(a["X_valid"])}, r"X_valid must have the columns of X_train: missing \['cat__region'\], extra \[\]"),
]


@pytest.mark.parametrize(
    "dataset,change,message", [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS]
)
def test_bad_input_is_a_train_error_naming_the_problem(datasets, dataset, change, message):
    data = datasets[dataset]
    args = _small(data)
    kwargs = {"family": "linear", "task": data.task, "metric": data.metric}
    for key, value in change.items():
        if callable(value):
            args[key] = value(args)
        else:
            kwargs[key] = value
    cfg = TrainConfig(search_iterations=1)
    with pytest.raises(TrainError, match=message):
        search_family(
            kwargs["family"],
            args["X_train"],
            args["y_train"],
            args["X_valid"],
            args["y_valid"],
            task=kwargs["task"],
            metric=kwargs["metric"],
            cfg=cfg,
        )
    assert issubclass(TrainError, ValueError)


def test_bad_input_to_the_other_entry_points(churn, house):
    with pytest.raises(TrainError, match="unknown model family 'svm'"):
        make_head("svm", "classification", [])
    with pytest.raises(TrainError, match="task must be one of"):
        make_head("linear", "clustering", [])
    with pytest.raises(TrainError, match=r"linear: unknown parameters \['alpah'\] for Ridge"):
        make_head("linear", "regression", [], {"alpah": 1.0})
    with pytest.raises(TrainError, match=r"search space names unknown parameters \['depth'\]"):
        search_settings("random_forest", "regression", 3, 0, space={"depth": [1, 2]})
    with pytest.raises(TrainError, match="metric 'rmse' cannot score classification"):
        baseline_candidate(
            churn.X_train, churn.y_train, churn.X_valid, churn.y_valid,
            task="classification", metric="rmse",
        )
    with pytest.raises(TrainError, match="single class"):
        baseline_candidate(
            churn.X_train, np.full(N_TRAIN, "no"), churn.X_valid, np.full(N_VALID, "no"),
            task="classification", metric="roc_auc",
        )
    with pytest.raises(TrainError, match="unknown model family 'xgboost'"):
        train_candidate(
            "xgboost", house.train, house.valid, house.transformer, house.schema,
            TrainConfig(), metric="rmse",
        )
    with pytest.raises(TrainError, match="metric 'roc_auc' cannot score regression"):
        score("roc_auc", None, house.X_valid, house.y_valid, task="regression")


# ---------------------------------------------------------------------------
# Accuracy: the selected family is at least as good as a default gradient boosting


# Few training rows keep the searches fast; many test rows (only predicted) keep the
# comparison from hinging on a few hundred noisy rows.
ACCURACY_ROWS = (1800, 600, 4000)


@pytest.mark.parametrize(
    "task,tolerance",
    [
        # ROC-AUC, absolute; RMSE, relative.
        ("classification", 0.005),
        ("regression", 0.02),
    ],
)
def test_selected_family_is_at_least_as_good_as_default_gbm(task, tolerance):
    n_train, n_valid, n_test = ACCURACY_ROWS
    n = n_train + n_valid + n_test
    if task == "classification":
        df = make_churn(n, seed=11)
        schema = infer_schema(
            df, target="churned", time_column="signup_date", id_column="customer_id",
            positive_label="yes", cfg=ValidationConfig(),
        )
        target = "churned"
    else:
        df = make_house_prices(n, seed=11)
        schema = infer_schema(df, target="price", id_column="listing_id", cfg=ValidationConfig())
        target = "price"
    train, valid, test = df.iloc[:n_train], df.iloc[n_train : n_train + n_valid], df.iloc[n_train + n_valid :]
    transformer = fit_features(train, schema)
    metric = METRIC[task]
    cfg = TrainConfig(families=list(FAMILIES), search_iterations=3, seed=0)

    served, records = {}, []
    for family in cfg.families:
        served[family], record = train_candidate(
            family, train, valid, transformer, schema, cfg, metric=metric
        )
        records.append(record)
    chosen = records[select_best(records, metric)]["family"]

    X_train, y_train = model_inputs(train, transformer, schema)
    X_test, y_test = model_inputs(test, transformer, schema)
    gbm_cls = HistGradientBoostingClassifier if task == "classification" else HistGradientBoostingRegressor
    with threadpool_limits(1):
        gbm = gbm_cls(random_state=0).fit(X_train, y_train)
    positive = schema.get("positive_label")
    ours = score(metric, served[chosen], test.drop(columns=[target]), y_test, task=task, positive_label=positive)
    theirs = score(metric, gbm, X_test, y_test, task=task, positive_label=positive)
    if higher_is_better(metric):
        assert ours >= theirs - tolerance, (chosen, ours, theirs)
    else:
        assert ours <= theirs * (1 + tolerance), (chosen, ours, theirs)
