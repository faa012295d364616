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

Task = Literal["classification", "regression"]

DEFAULT_FAMILIES = ["linear", "hist_gradient_boosting", "random_forest"]
DEFAULT_IMAGE = "ghcr.io/kubeloop/kubeloop:0.1.0"


class ConfigError(ValueError):
    """The configuration is invalid; the message names each bad key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SplitConfig(_Section):
    """Fractions of the rows that go to each split, and the seed of the shuffle."""

    train: float = Field(0.70, gt=0, lt=1)
    valid: float = Field(0.15, gt=0, lt=1)
    test: float = Field(0.15, gt=0, lt=1)
    seed: int = 42

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
    # is then refitted on the whole training split.
    search_max_rows: int = Field(100_000, ge=100)
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
    # None: defaults per task (see components.gate.default_guardrails).
    guardrails: list[GuardrailConfig] | None = None
    # With no champion the challenger must beat the trivial baseline by this much.
    min_lift_over_baseline: float = Field(0.0, ge=0)


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
    # On a cluster, the Kubernetes Secret whose AWS_* keys the pipeline steps get as env.
    credentials_secret: str = "kubeloop-s3"
    max_attempts: int = Field(5, ge=1, le=20)
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(30.0, gt=0)


class MonitoringConfig(_Section):
    """Drift thresholds, the performance-decay window and the retraining policy.

    A column drifts when an effect size reaches its threshold AND the test's
    p-value is below ``p_value``. Effect sizes decide because on a million rows
    every p-value is tiny; the p-value only keeps a handful of rows from raising
    an alarm on noise.
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
    # Guard for small samples: no drift unless the test also rejects at this level.
    p_value: float = Field(0.05, gt=0, lt=1)
    psi_bins: int = Field(10, ge=2, le=100)
    # Stored profiles keep this many quantile points per numeric column (KS and
    # Wasserstein against them are within 1/profile_points of the full reference).
    profile_points: int = Field(2000, ge=50, le=100_000)
    # A data file used as the reference keeps up to this many values per numeric
    # column exactly (beyond: a uniform random sample of this size).
    exact_reference_rows: int = Field(200_000, ge=1000)
    # Categories kept per column in a profile; rarer ones are pooled.
    max_categories: int = Field(1000, ge=2)
    batch_rows: int = Field(131_072, ge=1024)
    # Performance decay: labelled predictions are scored per window of this length.
    decay_window_hours: float = Field(24.0, gt=0)
    # Retraining policy.
    metric: str | None = None  # default: accuracy (classification), rmse (regression)
    metric_tolerance: float = Field(0.02, ge=0)  # absolute drop, in the metric's own direction
    important_features: int = Field(5, ge=1)  # drift counts on the top-N features by importance
    min_labeled_rows: int = Field(200, ge=0)
    cooldown_hours: float = Field(24.0, ge=0)


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
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)

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
