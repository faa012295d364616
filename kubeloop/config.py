"""One typed configuration for a kubeloop run.

A YAML file given with ``--config`` fills it; command-line flags override the
file; the defaults work with no file at all. Unknown keys are errors that name
the key, so a typo in a gate threshold never passes silently.

The whole object travels into every pipeline step as a plain dict
(``Config.to_dict()``), so the compiled pipeline carries no Python objects and,
by construction, no credentials: the storage section holds only the endpoint and
the *name* of the Kubernetes Secret that carries the keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kubeloop.errors import UserError

Task = Literal["classification", "regression"]

DEFAULT_FAMILIES = ["linear", "hist_gradient_boosting", "random_forest"]
DEFAULT_IMAGE = "ghcr.io/kubeloop/kubeloop:0.1.0"


# The value of canary.log_uri (or --log-uri / --logs) that turns prediction logs off.
LOGS_OFF = "off"


def is_logs_off(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() in (LOGS_OFF, "none", "false", "")


class ConfigError(UserError, ValueError):
    """The configuration is invalid; the message names each bad key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SplitConfig(_Section):
    """Fractions of the rows that go to each split, and the seed of the shuffle."""

    train: float = Field(0.70, gt=0, lt=1)
    valid: float = Field(0.15, gt=0, lt=1)
    test: float = Field(0.15, gt=0, lt=1)
    seed: int = 42
    # drop: exact duplicate rows are dropped before splitting, so no copy of a training
    # row is scored as unseen. keep: every row is assigned on its own, copies included,
    # for data whose repeated rows are real observations (survey answers, repeated
    # measurements), where dropping them removes the frequencies a model learns from.
    duplicates: Literal["drop", "keep"] = "drop"

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> SplitConfig:
        total = self.train + self.valid + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions train+valid+test must sum to 1, got {total:.4f}")
        return self


class TrainConfig(_Section):
    """Candidate model families and their search budgets."""

    families: list[str] = Field(default_factory=lambda: list(DEFAULT_FAMILIES), min_length=1)
    # Hyperparameter settings tried per family (the family's defaults are always one of them).
    search_iterations: int = Field(6, ge=1, le=200)
    # The search runs on at most this many training rows; the winner of each family
    # is then refitted on the training sample (max_rows).
    search_max_rows: int = Field(100_000, ge=100)
    # Candidates train on a seeded sample of at most this many training rows
    # (stratified by class, whole id groups when the split groups by id); evaluation
    # still scores the whole test split. Sized for a 4 GiB pod at 20 columns: a
    # sampled row costs about 48 bytes a column while a family fits (the raw frame
    # at 8 B, the float32 features at 4 B, the family's own copy at up to 8 B, the
    # half-sample refit of the learning curve, then 2x headroom for the model's
    # structures), 20 x 48 B = 960 B, so 2M rows take about 1.8 GiB of the 4 GiB,
    # beside the 0.5 GiB imports and the validation split. A smaller pod limit
    # shrinks the sample (kubeloop.memory).
    max_rows: int = Field(2_000_000, ge=100)
    # Validation rows used to score search candidates (all rows are used for the final score).
    search_valid_max_rows: int = Field(100_000, ge=100)
    seed: int = 42
    # Families trained at the same time on a cluster (one pod each). `kubeloop run`
    # trains them one after another instead: each one already uses every core of
    # the machine, and running them together only makes them fight over it.
    parallelism: int = Field(4, ge=1, le=32)

    @field_validator("families")
    def _known_families(cls, value: list[str]) -> list[str]:
        known = {"linear", "hist_gradient_boosting", "random_forest", "extra_trees"}
        unknown = [f for f in value if f not in known]
        if unknown:
            raise ValueError(f"unknown model families {unknown}; known: {sorted(known)}")
        if len(set(value)) != len(value):
            raise ValueError(f"model families listed twice: {value}")
        return value


class GuardrailConfig(_Section):
    """The challenger may be worse than the champion on ``metric`` by at most ``tolerance``.

    ``relative: true`` reads the tolerance as a fraction of the champion's value.
    """

    metric: str
    tolerance: float = Field(0.0, ge=0)
    relative: bool = False


class GateConfig(_Section):
    """How a challenger is compared with the production model (the champion)."""

    # None: roc_auc for classification, rmse for regression.
    primary_metric: str | None = None
    # The challenger must improve the primary metric by at least this much (absolute,
    # in the metric's own direction); a tie never promotes.
    min_improvement: float = Field(0.001, ge=0)
    # True: min_improvement is a fraction of the champion's value on the compared rows
    # (0.01 = 1 % better), for metrics whose scale is the target's (rmse, mae).
    min_improvement_relative: bool = False
    # None: defaults per task (see components.gate.default_guardrails).
    guardrails: list[GuardrailConfig] | None = None
    # With no champion the challenger must beat the trivial baseline by this much.
    min_lift_over_baseline: float = Field(0.0, ge=0)
    # Every comparison is paired on the same test rows and bootstrapped: the lower end
    # of the improvement's interval at this confidence must clear min_improvement (and
    # a guardrail's worse end must stay within its tolerance).
    confidence: float = Field(0.95, gt=0, lt=1)
    bootstrap_samples: int = Field(1000, ge=100, le=100_000)
    # Above this many compared rows the replicates come from a sample of this size,
    # their spread scaled to all rows (kubeloop.paired): bounded time on big test sets.
    bootstrap_max_rows: int = Field(20_000, ge=1000)
    bootstrap_seed: int = 0
    # Fewer shared test rows than this (after leaving out the rows the champion was
    # trained or validated on) never promote: the difference would be noise.
    min_test_rows: int = Field(50, ge=1)
    # A production model that cannot be loaded or scored any more (a library upgrade,
    # a missing file): compare_to_baseline judges the challenger as if there were no
    # champion (the reason is recorded); block rejects every challenger until a person
    # acts (e.g. moves `production` to a version that loads).
    on_champion_error: Literal["compare_to_baseline", "block"] = "compare_to_baseline"
    # Row fingerprints stored with each version: exact up to this many rows, above it a
    # Bloom filter with this false-positive rate (a false positive only drops a test
    # row from the comparison, it never lets a seen row in).
    fingerprint_exact_rows: int = Field(1_000_000, ge=0)
    fingerprint_false_positive_rate: float = Field(0.001, gt=0, lt=0.5)


class FeaturesConfig(_Section):
    """What the feature step derives from the data."""

    # Absolute time from the time column (its year, days since 1970, or a numeric
    # year/epoch time column itself). Off by default: under a time split the test
    # period lies beyond every training value, so a model can only extrapolate from
    # it; the recurring parts (month, day, day of week, hour) are always used.
    absolute_time: bool = False


class ValidationConfig(_Section):
    """Tolerances of the data checks; anything beyond them stops the pipeline."""

    min_rows: int = Field(50, ge=2)
    min_rows_per_class: int = Field(2, ge=1)
    max_duplicate_fraction: float = Field(0.05, ge=0, le=1)
    max_target_missing_fraction: float = Field(0.0, ge=0, le=1)
    max_unseen_category_fraction: float = Field(0.05, ge=0, le=1)
    # A column whose missing rate grows by more than this (absolute) is reported.
    max_missing_rate_increase: float = Field(0.20, ge=0, le=1)
    # Rows outside the production schema's numeric range beyond this fraction are reported.
    max_out_of_range_fraction: float = Field(0.05, ge=0, le=1)
    # A single feature that predicts the target this well on held-out rows is leakage.
    leakage_threshold: float = Field(0.98, gt=0.5, le=1)
    # Columns in the data that the production schema does not have.
    allow_extra_columns: bool = False
    # A string column with at most this many distinct values (or this fraction of rows)
    # is categorical; above both it is free text or an id and is not used as a feature.
    max_categories: int = Field(100, ge=2)
    max_category_fraction: float = Field(0.5, gt=0, le=1)


class EvaluationConfig(_Section):
    """What the evaluation reports beyond the headline metrics."""

    sensitive_columns: list[str] = Field(default_factory=list)
    # Slices smaller than this are not scored (their metrics are noise).
    min_slice_rows: int = Field(30, ge=1)
    max_slices_per_column: int = Field(20, ge=1)
    # Seeds for the stability estimate (refits on a subsample); 0 turns it off.
    stability_seeds: int = Field(3, ge=0, le=20)
    stability_max_rows: int = Field(20_000, ge=100)
    calibration_bins: int = Field(10, ge=2, le=100)


class StorageConfig(_Section):
    """Where S3-compatible storage is and how to reach it (never the keys themselves)."""

    endpoint_url: str | None = None
    region: str | None = None
    # MinIO wants path-style addressing (http://host:9000/bucket/key).
    path_style: bool = True
    # On a cluster, the Kubernetes Secret whose AWS_* keys the pipeline steps get as
    # env: the pipeline's own MinIO user (manifests/base), never the predictor's or root.
    credentials_secret: str = "kubeloop-s3-pipeline"
    # Where prediction logs go when canary.log_uri is not set: s3://<logs_bucket>/predictions.
    # The bucket manifests/ creates for them, the one the predictor's keys may write
    # (not the registry's: the predictor may not write models/).
    logs_bucket: str = Field("logs", pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    max_attempts: int = Field(5, ge=1, le=20)
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(30.0, gt=0)


# Kubernetes quantities as KFP accepts them ("500m", "2", "1.5"; "512Mi", "8G").
_CPU = r"^[0-9]*\.?[0-9]+m?$"
_MEMORY = r"^[0-9]+(\.[0-9]+)?(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$"


class StepResources(_Section):
    """CPU and memory of one pipeline step's pod (ignored by the local runner)."""

    cpu_request: str = Field("250m", pattern=_CPU)
    cpu_limit: str = Field("1", pattern=_CPU)
    memory_request: str = Field("512Mi", pattern=_MEMORY)
    memory_limit: str = Field("2Gi", pattern=_MEMORY)

    def cpu_limit_cores(self) -> int:
        """Whole cores the step may use: the size of its thread pools (at least 1)."""
        text = self.cpu_limit
        cores = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
        return max(1, int(cores))


class ResourcesConfig(_Section):
    """Pod sizes and retries on a cluster. The defaults fit a laptop's kind cluster;
    size ``train`` (one pod per model family) to your data."""

    default: StepResources = Field(default_factory=StepResources)
    train: StepResources = Field(
        default_factory=lambda: StepResources(
            cpu_request="1", cpu_limit="2", memory_request="1Gi", memory_limit="4Gi"
        )
    )
    # Steps that are safe to repeat (everything but register) retry with backoff
    # after a pod is evicted or a node goes away.
    retries: int = Field(2, ge=0, le=10)
    retry_backoff_seconds: int = Field(30, ge=1, le=3600)


class CanaryConfig(_Section):
    """How a version goes out on KServe and how a canary is judged from its prediction logs.

    The thresholds feed ``kubeloop.deploy.verdict.decide``: a canary is compared
    with the primary on the same stretch of traffic; anything worse than these
    bounds rolls it back, too little evidence holds it.
    """

    # -- rollout
    namespace: str = "kubeloop"
    service_account: str = "kubeloop-predictor"
    # serverless: Knative revisions and spec.predictor.canaryTrafficPercent;
    # standard: plain Deployments and the spec.canary list (KServe >= 0.20).
    mode: Literal["serverless", "standard"] = "serverless"
    # Share of traffic a new version starts with (the first version always gets 100).
    initial_percent: int = Field(10, ge=0, le=100)
    # Traffic steps of an automated rollout; each must pass analysis before the next.
    steps: list[int] = Field(default_factory=lambda: [10, 50, 100], min_length=1)
    # Knative tag routing: prev-/latest- URLs for trying a 0 % (blue-green) version.
    tag_routing: bool = False
    min_replicas: int | None = Field(1, ge=0)
    max_replicas: int | None = Field(None, ge=1)
    cpu_request: str | None = "500m"
    memory_request: str | None = "1Gi"
    cpu_limit: str | None = None
    memory_limit: str | None = "2Gi"
    # Prediction-log root the predictor writes to and analysis reads. Unset: the
    # storage's logs bucket, s3://<storage.logs_bucket>/predictions; "off": no logs.
    log_uri: str | None = None
    # The Secret (namespace above) whose AWS_* keys the predictor writes its logs and
    # reads a shadow model with: the predictor's own MinIO user, which may not write
    # models/. Not storage.credentials_secret: that is the pipeline's.
    credentials_secret: str | None = "kubeloop-s3-predictor"
    wait_timeout_seconds: float = Field(300.0, gt=0)
    # -- analysis
    # Scored rows each version needs before anything but "hold" is decided.
    min_rows: int = Field(200, ge=1)
    # Absolute increase of the canary's rate over the primary's that is still fine.
    max_error_rate_increase: float = Field(0.01, ge=0, le=1)
    max_rejection_rate_increase: float = Field(0.02, ge=0, le=1)
    # Latency: the canary's percentile may be at most ratio x the primary's, but a
    # difference under latency_slack_ms always passes (noise on fast models). Each
    # is judged on its interval (requests resampled), once both versions have
    # 10 requests beyond it (200 for p95, 1000 for p99).
    max_latency_p50_ratio: float = Field(1.5, ge=1)
    max_latency_p95_ratio: float = Field(1.5, ge=1)
    max_latency_p99_ratio: float = Field(2.0, ge=1)
    latency_slack_ms: float = Field(5.0, ge=0)
    # Population stability index between the two prediction distributions; above
    # it the canary is held until labels show which side is right.
    max_psi: float = Field(0.25, gt=0)
    # Labelled rows each version needs before the model metric is compared.
    min_labeled_rows: int = Field(100, ge=1)
    # How much worse the canary may be on labelled rows: absolute, in the metric's
    # units (Brier score, accuracy or MAE), plus a share of the primary's value
    # (0.05: 5 % worse than the primary's MAE); the two add up.
    max_metric_degradation: float = Field(0.02, ge=0)
    max_metric_degradation_ratio: float = Field(0.0, ge=0, lt=1)
    # Chance that a canary exactly at a bound passes it, over every look at the same
    # canary together (confidence sequences, kubeloop/deploy/sequential.py).
    alpha: float = Field(0.05, gt=0, lt=0.5)
    # Prometheus HTTP API (http://prometheus:9090): request counts by response class
    # and latency histograms per revision from Knative's queue-proxy, which sees the
    # failures the predictor never does (502/503, timeouts). Unset: logs alone.
    prometheus_url: str | None = None
    # Hold until labels arrive instead of promoting on operational signals alone.
    require_labels: bool = False

    @field_validator("log_uri", mode="before")
    def _log_uri_switch(cls, value: Any) -> Any:
        # YAML reads a bare `off` (or `no`, `false`) as False.
        return LOGS_OFF if value is False or is_logs_off(value) else value

    @field_validator("steps")
    def _steps_increase(cls, value: list[int]) -> list[int]:
        if any(not 0 < v <= 100 for v in value):
            raise ValueError(f"canary steps must be percentages in 1..100, got {value}")
        if any(b <= a for a, b in zip(value, value[1:], strict=False)):
            raise ValueError(f"canary steps must increase, got {value}")
        return value


class MonitoringConfig(_Section):
    """Drift thresholds, the performance-decay window and the retraining policy.

    A column drifts when an effect size reaches its threshold plus the sampling
    noise of samples that size AND its test is rejected after a Benjamini-Hochberg
    correction over every test of the run at ``false_alarm_rate``. Effect sizes
    decide because on a million rows every p-value is tiny; the corrected tests
    keep a handful of rows, or many columns, from raising an alarm on noise.
    """

    # Numeric columns: population stability index on the reference's quantile bins,
    # Wasserstein distance divided by the reference's standard deviation, and the
    # Kolmogorov-Smirnov statistic (the largest gap between the two CDFs).
    psi_threshold: float = Field(0.2, gt=0)
    wasserstein_threshold: float = Field(0.1, gt=0)
    ks_threshold: float = Field(0.1, gt=0, le=1)
    # Categorical columns: Jensen-Shannon distance (base 2, in [0, 1]) and the
    # fraction of current rows whose category the reference never had (PSI as above).
    js_threshold: float = Field(0.1, gt=0, le=1)
    unseen_threshold: float = Field(0.05, gt=0, le=1)
    # Any column: absolute change of the missing rate.
    missing_rate_threshold: float = Field(0.1, gt=0, le=1)
    # The target: at most this share of runs with no drift report any drifted
    # column (so start a retrain): the level of the Benjamini-Hochberg correction
    # over all of a run's tests.
    false_alarm_rate: float = Field(0.01, gt=0, lt=1)
    # Per-column guard on top: no drift unless the column's own test rejects at this level.
    p_value: float = Field(0.05, gt=0, lt=1)
    psi_bins: int = Field(10, ge=2, le=100)
    # Stored profiles keep this many quantile points per numeric column (KS and
    # Wasserstein against them are within 1/profile_points of the full reference).
    profile_points: int = Field(2000, ge=50, le=100_000)
    # A data file used as the reference keeps up to this many values per numeric
    # column (within 32M values over all columns, as many again of the current
    # data): KS then equals scipy's. Beyond, a uniform sample of 200,000 values and
    # KS within the bound the report states.
    exact_reference_rows: int = Field(10_000_000, ge=1000)
    # Categories kept per column in a profile; rarer ones are pooled.
    max_categories: int = Field(1000, ge=2)
    batch_rows: int = Field(131_072, ge=1024)
    # Performance decay: labelled predictions are scored per window of this length.
    decay_window_hours: float = Field(24.0, gt=0)
    # Windows, back from the run's time (0: everything logged). Drift looks at recent
    # traffic (a long window dilutes a recent shift); labels may arrive days after
    # the prediction, so the predictions joined with labels go further back.
    drift_window_hours: float = Field(168.0, ge=0)
    labels_window_hours: float = Field(720.0, ge=0)
    # Retraining policy.
    metric: str | None = None  # default: accuracy (classification), rmse (regression)
    metric_tolerance: float = Field(0.02, ge=0)  # absolute drop, in the metric's own direction
    # Decay counts only when the whole interval (at this confidence) of the live
    # metric is worse than training by more than the tolerance, on at least
    # decay_min_rows labelled rows: sampling noise of a few hundred labels alone
    # does not retrain.
    decay_confidence: float = Field(0.95, gt=0, lt=1)
    decay_min_rows: int = Field(100, ge=1)
    important_features: int = Field(5, ge=1)  # drift counts on the top-N features by importance
    # Labels that arrived since the last retrain (or attempt), joined to logged predictions;
    # required only when a label source is given (without one, drift alone can retrain).
    min_labeled_rows: int = Field(200, ge=0)
    # Hours after the last retrain, registered or failed, before the next one.
    cooldown_hours: float = Field(24.0, ge=0)


class ScaleConfig(_Section):
    # Inputs with more rows than this are profiled as a fan-out: one step (pod) per
    # partition of this many rows, then a merge of their statistics.
    partition_rows: int = Field(5_000_000, ge=1)
    # Numeric columns' bottom-k sample (the profile's points; exact up to this many
    # values, a rank error of sqrt(ln(2000) / 2k) beyond).
    sample_rows: int = Field(200_000, ge=100)
    # Levels counted exactly per categorical column before Misra-Gries takes over.
    category_cap: int = Field(10_000, ge=10)


class Config(_Section):
    """Everything one run needs; see ``kubeloop run --help`` for the flags that override it."""

    target: str | None = None
    task: Task | None = None
    time_column: str | None = None
    id_column: str | None = None
    positive_label: str | None = None
    model_name: str = "model"
    registry: str = "registry"
    image: str = DEFAULT_IMAGE
    split: SplitConfig = Field(default_factory=SplitConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    canary: CanaryConfig = Field(default_factory=CanaryConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    scale: ScaleConfig = Field(default_factory=ScaleConfig)

    @field_validator("model_name")
    def _model_name_is_a_path_segment(cls, value: str) -> str:
        import re

        if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", value):
            raise ValueError(
                f"model name {value!r} must be lowercase letters, digits and '-', "
                "starting and ending with a letter or digit (it becomes a Kubernetes name)"
            )
        return value

    @model_validator(mode="after")
    def _gate_metrics_exist(self) -> Config:
        # A typo or a metric of the other task would otherwise surface only after
        # training; the task may still be unknown here (then any task's metric passes,
        # and the validate step checks again once it has inferred the task).
        self.check_gate_metrics(self.task)
        return self

    def check_gate_metrics(self, task: str | None) -> None:
        from kubeloop.metric_names import check_gate_metrics

        rails = [g.metric for g in self.gate.guardrails or []]
        check_gate_metrics(task, self.gate.primary_metric, rails)

    def prediction_log_root(self, explicit: str | None = None) -> str | None:
        """Where the predictor writes its prediction logs and canary analysis reads
        them: ``explicit`` (a flag) if given, else ``canary.log_uri``, else
        ``s3://<storage.logs_bucket>/predictions``; None when turned off ("off")."""
        value = self.canary.log_uri if explicit is None else explicit
        if value is None:
            return f"s3://{self.storage.logs_bucket}/predictions"
        return None if value is False or is_logs_off(value) else value

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_params(self) -> dict[str, Any]:
        """``to_dict`` without the unset (None) values: a KFP parameter cannot hold
        null, and ``from_dict`` gives a missing key its default, which is None."""
        return _drop_none(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Config:
        try:
            return cls.model_validate(data or {})
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None

    def with_overrides(self, **overrides: Any) -> Config:
        """A copy with the given top-level keys set; ``None`` values are ignored."""
        data = self.to_dict()
        data.update({k: v for k, v in overrides.items() if v is not None})
        return Config.from_dict(data)


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"config: {where}: {msg}" if where else f"config: {msg}")
    return "\n".join(lines)


def load_config(path: str | Path | None = None, **overrides: Any) -> Config:
    """Read ``path`` (YAML) if given, then apply the non-None ``overrides``."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config: file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"config: {p} is not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config: {p} must hold a mapping at the top level")
        data = loaded
    data.update({k: v for k, v in overrides.items() if v is not None})
    return Config.from_dict(data)
