"""Seeded sample data: the datasets the demo, the tests and the benchmarks run on.

Every generator is deterministic for a given seed, vectorized with numpy (a
million rows take well under a few seconds) and returns a pandas DataFrame with
the messiness real tables have: string ids, timestamps, categorical and
yes/no columns, and missing values, some at random and some that depend on
other columns.

- ``make_churn``: binary classification (target ``churned``, "yes"/"no", about
  20 % positive). The churn probability is a logistic function of several
  features with non-linear terms and an interaction plus an unobserved factor, so
  a good model reaches a ROC-AUC of about 0.85 but never 1. ``drift`` moves
  feature distributions and the relation between features and target, which is
  what the monitoring stage has to detect.
- ``make_house_prices``: regression (target ``price``).
- ``make_wide``: the benchmark table, by default 20 columns (14 numeric,
  5 categorical, binary ``label`` 0/1).
- ``scale_batches``: the scale benchmark's table (a timestamp, 13 numeric and
  5 categorical columns, ``label`` 0/1 with its true probability), any number of
  rows, one batch at a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

KINDS = ("churn", "house_prices", "wide")

_REGIONS = ["north", "south", "east", "west", "central", "northeast", "southwest"]
_PAYMENT = ["electronic_check", "mailed_check", "bank_transfer", "credit_card"]
_PLANS = ["basic", "standard", "premium"]
_CONTRACTS = ["monthly", "annual", "two-year"]
_DEVICES = ["mobile", "desktop", "tablet"]


def _categorical(codes: np.ndarray, categories: list[str]) -> pd.Categorical:
    """A category column from integer codes (-1 is missing), categories sorted.

    ``from_codes`` builds the column without materializing a million Python
    strings; sorted categories are what ingest gives the same column read from CSV.
    """
    order = np.argsort(categories)
    rank = np.empty(len(categories), dtype=np.int16)
    rank[order] = np.arange(len(categories))
    new_codes = np.where(codes >= 0, rank[np.maximum(codes, 0)], -1)
    return pd.Categorical.from_codes(new_codes, categories=sorted(categories))


def _choice(rng: np.random.Generator, n: int, probs: np.ndarray) -> np.ndarray:
    """One category code per row, with per-row probabilities when ``probs`` is 2-D.

    Inverse-CDF sampling, because ``Generator.choice`` takes one probability
    vector, not one per row.
    """
    cum = np.cumsum(np.atleast_2d(probs), axis=1)
    cum /= cum[:, -1:]
    u = rng.random(n)[:, None]
    return (u > cum).sum(axis=1).astype(np.int8)


def _mask_missing(
    rng: np.random.Generator, values: np.ndarray, rate: float | np.ndarray
) -> np.ndarray:
    """Float copy of ``values`` with a ``rate`` (scalar or per-row) of them set to NaN."""
    out = values.astype(np.float64)
    out[rng.random(len(out)) < rate] = np.nan
    return out


def _missing_codes(rng: np.random.Generator, codes: np.ndarray, rate: float) -> np.ndarray:
    codes = codes.astype(np.int8)
    codes[rng.random(len(codes)) < rate] = -1
    return codes


def _ids(prefix: str, numbers: np.ndarray, width: int) -> np.ndarray:
    # np.char works on fixed-width string arrays in C; much faster than a Python loop.
    digits = np.char.zfill(numbers.astype(f"U{width}"), width)
    return np.char.add(prefix, digits).astype(object)


def _check_rows(n_rows: int) -> None:
    if not isinstance(n_rows, int | np.integer) or n_rows < 1:
        raise ValueError(f"n_rows must be a positive integer, got {n_rows!r}")


def make_churn(
    n_rows: int = 5000, seed: int = 0, *, start: str = "2024-01-01", drift: float = 0.0
) -> pd.DataFrame:
    """A customer-churn table with target ``churned`` ("yes"/"no").

    ``drift`` (0 = none, 1 = strong) raises prices and support load, moves
    customers to mobile and monthly contracts, ages the population, and changes
    the relation: price sensitivity grows and the tenure effect weakens.
    """
    _check_rows(n_rows)
    if drift < 0:
        raise ValueError(f"drift must be >= 0, got {drift}")
    rng = np.random.default_rng(seed)
    n = n_rows

    # Sign-ups spread over about 18 months, to the second.
    t0 = pd.Timestamp(start)
    seconds = rng.integers(0, 548 * 86_400, n)
    signup = t0.to_datetime64().astype("datetime64[s]") + seconds.astype("timedelta64[s]")

    # Many new customers, a long tail of loyal ones.
    tenure = np.minimum(rng.gamma(1.3, 16.0, n), 72.0).astype(np.int64)

    age = np.clip(rng.normal(44 + 4 * drift, 14, n), 18, 90).round()
    region = _choice(rng, n, np.array([0.18, 0.16, 0.15, 0.15, 0.14, 0.12, 0.10]))
    device_p = np.array([0.45 + 0.2 * drift, 0.40 - 0.15 * drift, 0.15 - 0.05 * drift])
    device = _choice(rng, n, np.clip(device_p, 0.01, None))

    # Longer-tenured customers are more often on long contracts.
    long_share = 1 / (1 + np.exp(-(tenure - 24) / 10))
    monthly_p = (0.75 - 0.55 * long_share) + 0.15 * drift
    contract_probs = np.column_stack(
        [monthly_p, (1 - monthly_p) * 0.55, (1 - monthly_p) * 0.45]
    ).clip(0.01, None)
    contract = _choice(rng, n, contract_probs)

    plan = _choice(rng, n, np.array([0.40, 0.38, 0.22]))
    # Older customers pay more often by mailed check.
    old = (age > 60).astype(np.float64)
    payment_probs = np.column_stack(
        [np.full(n, 0.33), 0.12 + 0.25 * old, np.full(n, 0.27), np.full(n, 0.28)]
    )
    payment = _choice(rng, n, payment_probs)
    paperless = rng.random(n) < (0.65 - 0.3 * old)

    base_price = np.array([29.0, 59.0, 99.0])[plan]
    monthly_charges = np.round(
        base_price * (1 + 0.12 * drift) + rng.normal(0, 8, n) + 6 * (device == 0), 2
    ).clip(10, None)
    total_charges = np.round(tenure * monthly_charges * rng.normal(1.0, 0.04, n), 2)
    products = 1 + rng.poisson(0.8 + 0.4 * (plan == 2), n)
    data_usage_gb = np.round(rng.lognormal(2.2 + 0.3 * (device == 0), 0.7, n), 1)

    # Unobserved satisfaction drives support calls and churn, which caps what any
    # model can learn from the observed columns.
    satisfaction = rng.normal(0, 1, n)
    support_calls = rng.poisson(np.exp(0.2 - 0.45 * satisfaction + 0.3 * drift))
    last_login_days = np.round(rng.exponential(6 + 5 * np.maximum(-satisfaction, 0), n))

    is_monthly = contract == 0
    observed = (
        -1.35
        - 0.9 * np.log1p(tenure) * (1 - 0.25 * drift)
        + 1.2 * is_monthly
        - 0.9 * (contract == 2)
        + 0.022 * (monthly_charges - 60) * (1 + 0.5 * drift)
        + 0.32 * support_calls
        + 0.9 * is_monthly * (payment == 0)  # interaction
        + 0.0011 * (age - 42) ** 2  # young and old churn more
        + 0.04 * np.minimum(last_login_days, 40)
        - 0.25 * (products - 1)
        + 0.25 * (device == 0)
    )
    logit = 1.2 * observed - 0.8 * satisfaction + 0.25
    churned = rng.random(n) < 1 / (1 + np.exp(-logit))

    # Missing values: some at random, some tied to other columns.
    age_col = _mask_missing(rng, age, 0.03)
    # Brand-new customers have no billing history yet.
    total_col = np.where(tenure == 0, np.nan, total_charges)
    # Mobile customers more often skip the usage survey.
    usage_col = _mask_missing(rng, data_usage_gb, np.where(device == 0, 0.08, 0.02))
    # Logins are tracked only for active accounts.
    login_col = _mask_missing(rng, last_login_days, np.where(last_login_days > 20, 0.15, 0.02))

    return pd.DataFrame(
        {
            "customer_id": _ids("C", rng.permutation(n) + 1, max(7, len(str(n)))),
            "signup_date": signup.astype("datetime64[ns]"),
            "tenure_months": tenure,
            "age": age_col,
            "region": _categorical(_missing_codes(rng, region, 0.01), _REGIONS),
            "plan": _categorical(plan, _PLANS),
            "contract": _categorical(contract, _CONTRACTS),
            "payment_method": _categorical(_missing_codes(rng, payment, 0.02), _PAYMENT),
            "device": _categorical(device, _DEVICES),
            "paperless_billing": _categorical(paperless.astype(np.int8), ["No", "Yes"]),
            "monthly_charges": monthly_charges,
            "total_charges": total_col,
            "num_products": products,
            "data_usage_gb": usage_col,
            "support_calls": support_calls,
            "last_login_days": login_col,
            "churned": _categorical(churned.astype(np.int8), ["no", "yes"]),
        }
    )


_NEIGHBORHOODS = [
    "riverside",
    "old_town",
    "hillcrest",
    "lakeview",
    "downtown",
    "maple_park",
    "westgate",
    "northfield",
    "harbor",
    "university",
]
_NEIGHBORHOOD_PREMIUM = np.array([0.10, 0.05, 0.25, 0.30, 0.20, 0.0, -0.05, -0.10, 0.15, 0.08])
_HOUSE_TYPES = ["detached", "semi_detached", "townhouse", "condo"]
_CONDITIONS = ["poor", "fair", "good", "excellent"]


def make_house_prices(n_rows: int = 5000, seed: int = 0) -> pd.DataFrame:
    """A house-sales table with target ``price`` (a regression task).

    Price is multiplicative in size, location, condition and age with a
    saturating effect of bedrooms and log-normal noise, so errors grow with price
    the way they do in real listings.
    """
    _check_rows(n_rows)
    rng = np.random.default_rng(seed)
    n = n_rows

    listed_at = pd.Timestamp("2023-01-01").to_datetime64().astype("datetime64[s]") + rng.integers(
        0, 730 * 86_400, n
    ).astype("timedelta64[s]")
    house_type = _choice(rng, n, np.array([0.45, 0.20, 0.20, 0.15]))
    sqft = (
        np.round(np.exp(rng.normal(7.4, 0.35, n)) * np.array([1.2, 1.0, 0.85, 0.6])[house_type])
        .clip(300, None)
        .astype(np.int64)
    )
    bedrooms = np.clip(np.round(sqft / 550 + rng.normal(0, 0.7, n)), 1, 8).astype(np.int64)
    # In half steps (a half bath has no shower).
    bathrooms = np.clip(np.round(2 * (bedrooms * 0.6 + rng.normal(0, 0.5, n))) / 2, 1, 5)
    year_built = np.clip(np.round(rng.normal(1985, 25, n)), 1880, 2024)
    lot_size = np.round(np.where(house_type == 3, 0, rng.lognormal(8.5, 0.6, n)))
    neighborhood = _choice(rng, n, np.full(len(_NEIGHBORHOODS), 1.0))
    condition = _choice(rng, n, np.array([0.08, 0.30, 0.45, 0.17]))
    garage = rng.random(n) < np.where(house_type == 3, 0.3, 0.75)
    dist_center_km = np.round(rng.gamma(2.0, 5.0, n), 1)

    age = 2024 - year_built
    log_price = (
        12.4
        + 0.85 * np.log(sqft / 1500)
        + 0.12 * np.log1p(bedrooms)
        + 0.05 * bathrooms
        + _NEIGHBORHOOD_PREMIUM[neighborhood]
        + np.array([-0.25, -0.08, 0.0, 0.12])[condition]
        # Old houses lose value, very old ones (period homes) regain some.
        - 0.006 * age
        + 0.00003 * age**2
        + 0.06 * garage
        - 0.012 * dist_center_km
        + 0.03 * np.log1p(lot_size)
        + rng.normal(0, 0.12, n)
    )
    price = np.round(np.exp(log_price), -2).astype(np.int64)

    return pd.DataFrame(
        {
            "listing_id": _ids("L", rng.permutation(n) + 1, max(6, len(str(n)))),
            "listed_at": listed_at.astype("datetime64[ns]"),
            "sqft": sqft,
            "bedrooms": bedrooms,
            "bathrooms": bathrooms,
            "year_built": _mask_missing(rng, year_built, 0.04),
            "lot_size": _mask_missing(rng, lot_size, np.where(house_type == 3, 0.3, 0.03)),
            "dist_center_km": dist_center_km,
            "neighborhood": _categorical(_missing_codes(rng, neighborhood, 0.01), _NEIGHBORHOODS),
            "house_type": _categorical(house_type, _HOUSE_TYPES),
            "condition": _categorical(_missing_codes(rng, condition, 0.05), _CONDITIONS),
            "garage": _categorical(garage.astype(np.int8), ["no", "yes"]),
            "price": price,
        }
    )


def _wide_numeric(rng: np.random.Generator, j: int, x: np.ndarray, *, skewed: bool = False) -> np.ndarray:
    """The ``j``-th numeric column of the wide tables, observed from its latent ``x``."""
    if j < 2:
        # Counts, so the table has integer columns too.
        return rng.poisson(np.exp(0.5 + 0.5 * np.tanh(x)))
    if j % 4 == 3:
        return _mask_missing(rng, x, 0.02)
    if skewed and j % 5 == 4:
        return np.exp(x)  # skewed, as amounts are
    return x


def make_wide(n_rows: int, n_columns: int = 20, seed: int = 0) -> pd.DataFrame:
    """The benchmark table: ``n_columns`` columns, the last one the binary ``label`` (0/1).

    About three quarters of the features are numeric (``num_00``, ...; two of them
    integer counts, a few with 2 % missing values) and the rest categorical
    (``cat_00``, ..., 3 to 50 levels). 20 columns give 14 numeric and 5 categorical.
    """
    _check_rows(n_rows)
    if n_columns < 2:
        raise ValueError(
            f"n_columns must be >= 2 (at least one feature and the label), got {n_columns}"
        )
    rng = np.random.default_rng(seed)
    n = n_rows
    n_features = n_columns - 1
    n_cat = round(n_features * 5 / 19)
    n_num = n_features - n_cat

    columns: dict[str, object] = {}
    logit = np.zeros(n)
    weights = rng.normal(0, 1, n_num) / np.sqrt(max(n_num, 1))
    for j in range(n_num):
        x = rng.standard_normal(n)
        logit += weights[j] * x
        columns[f"num_{j:02d}"] = _wide_numeric(rng, j, x)
    if n_num >= 2:
        # A non-linear term, so tree models have something to find.
        logit += 0.5 * np.sin(2 * np.asarray(columns[f"num_{n_num - 1:02d}"], dtype=np.float64))
    for j in range(n_cat):
        levels = [3, 8, 12, 25, 50][j % 5]
        codes = rng.integers(0, levels, n).astype(np.int16)
        logit += rng.normal(0, 0.4, levels)[codes]
        columns[f"cat_{j:02d}"] = _categorical(codes, [f"v{k:02d}" for k in range(levels)])
    columns["label"] = (rng.random(n) < 1 / (1 + np.exp(-(logit - 1.0)))).astype(np.int64)
    return pd.DataFrame(columns)


def make(kind: str, n_rows: int = 5000, seed: int = 0) -> pd.DataFrame:
    """The generator named ``kind`` (one of ``KINDS``)."""
    if kind == "churn":
        return make_churn(n_rows, seed)
    if kind == "house_prices":
        return make_house_prices(n_rows, seed)
    if kind == "wide":
        return make_wide(n_rows, seed=seed)
    raise ValueError(f"unknown sample kind {kind!r}; choose one of {', '.join(KINDS)}")


def write_sample(path: str | Path, kind: str = "churn", n_rows: int = 5000, seed: int = 0) -> Path:
    """Generate ``kind`` and write it to ``path``: Parquet for .parquet/.pq, else CSV
    (.csv, .csv.gz, .tsv, .tsv.gz). Returns the path."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        fmt = "parquet"
    elif name.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz")):
        fmt = "csv"
    else:
        raise ValueError(
            f"cannot tell the format of {path}: use .csv, .csv.gz, .tsv, .tsv.gz, .parquet or .pq"
        )
    df = make(kind, n_rows, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        df.to_parquet(path, engine="pyarrow", compression="snappy", index=False)
    else:
        _write_csv(df, path, sep="\t" if ".tsv" in name else ",")
    return path


def _write_csv(df: pd.DataFrame, path: Path, sep: str) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pa_csv

    # pyarrow writes a million rows several times faster than DataFrame.to_csv.
    # Timestamps go out as ISO 8601 and categories as their labels.
    table = pa.Table.from_pandas(df, preserve_index=False)
    columns = []
    for column in table.columns:
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        elif pa.types.is_timestamp(column.type):
            column = pc.strftime(column, format="%Y-%m-%dT%H:%M:%S")
        columns.append(column)
    table = pa.Table.from_arrays(columns, names=table.column_names)
    options = pa_csv.WriteOptions(delimiter=sep, quoting_style="needed")
    compression = "gzip" if path.name.lower().endswith(".gz") else None
    with pa.output_stream(str(path), compression=compression) as sink:
        pa_csv.write_csv(table, sink, write_options=options)


# --- the scale table: any number of rows, generated batch by batch --------------------

SCALE_START = np.datetime64("2025-01-01T00:00:00", "s")
SCALE_SPAN_SECONDS = 700 * 86_400
_SCALE_LEVELS = (3, 8, 12, 25, 50)
_SCALE_NUMERIC = 13


def scale_batches(n_rows: int, *, seed: int = 0, batch_rows: int = 250_000):
    """The scale benchmark's table, ``batch_rows`` rows at a time: 20 columns (a
    timestamp ``event_time``, 13 numeric ``num_00``..., 5 categorical ``cat_00``...,
    binary ``label`` 0/1), with the same known truth in every batch.

    Yields ``(frame, p_true)``: ``p_true`` is each row's true probability of
    ``label == 1``, so the best any model can reach (its ROC-AUC) is known. The
    truth (weights, level effects) is drawn once from ``seed``; each batch's rows
    come from their own stream (``seed``, batch index), so memory stays one batch
    whatever ``n_rows`` is, and the same arguments give the same table.
    """
    _check_rows(n_rows)
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be a positive integer, got {batch_rows!r}")
    truth = np.random.default_rng([seed, 0])
    weights = truth.normal(0, 1, _SCALE_NUMERIC) / np.sqrt(_SCALE_NUMERIC)
    effects = [truth.normal(0, 0.4, levels) for levels in _SCALE_LEVELS]
    categories = [[f"v{k:02d}" for k in range(levels)] for levels in _SCALE_LEVELS]
    for index, start in enumerate(range(0, n_rows, batch_rows)):
        n = min(batch_rows, n_rows - start)
        rng = np.random.default_rng([seed, 1, index])
        seconds = rng.integers(0, SCALE_SPAN_SECONDS, n)
        when = SCALE_START + seconds.astype("timedelta64[s]")
        # Weekends and evenings buy more: the recurring parts the features step extracts.
        weekday = (seconds // 86_400 + 2) % 7  # 2025-01-01 was a Wednesday (Monday = 0)
        hour = (seconds % 86_400) // 3600
        logit = 0.35 * (weekday >= 5) + 0.3 * np.cos(2 * np.pi * (hour - 19) / 24)
        columns: dict[str, object] = {"event_time": when.astype("datetime64[ns]")}
        for j in range(_SCALE_NUMERIC):
            x = rng.standard_normal(n)
            logit += weights[j] * x
            columns[f"num_{j:02d}"] = _wide_numeric(rng, j, x, skewed=True)
        # A non-linear term, so tree models have something to find.
        logit += 0.5 * np.sin(2 * np.asarray(columns[f"num_{_SCALE_NUMERIC - 1:02d}"]))
        for j, levels in enumerate(_SCALE_LEVELS):
            codes = rng.integers(0, levels, n).astype(np.int16)
            logit += effects[j][codes]
            if j == len(_SCALE_LEVELS) - 1:
                codes = _missing_codes(rng, codes, 0.01)
            columns[f"cat_{j:02d}"] = _categorical(codes, categories[j])
        p_true = 1 / (1 + np.exp(-(logit - 1.0)))
        columns["label"] = (rng.random(n) < p_true).astype(np.int64)
        yield pd.DataFrame(columns), p_true
