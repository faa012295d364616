"""Train stage: a trivial baseline and one tuned candidate per model family.

One concern per module: ``families`` (the heads), ``sample`` (the rows a
candidate sees), ``search``, ``scoring``, ``baseline``, ``curve`` (the
learning-curve check), ``selection``, ``report``, ``step`` (a task on files) and
``ops`` (the KFP adapters). Every name is imported from here.

Every family fits a *head*: the model that sits after the features step, on its
float32 output, where ``cat__`` columns hold category codes (NaN for missing or
unseen) and every other column is numeric, imputed and scaled. The pipeline runs
one family per parallel task:

0. the task reads a seeded sample of at most ``train.max_rows`` training rows
   (stratified by class, whole ids when the split groups by id; fewer when the
   step's memory limit holds fewer, see ``step.sample_size``);
1. ``search_family`` tries ``search_iterations`` settings (the family's
   scikit-learn defaults first, then a seeded random search) on a subsample of at
   most ``search_max_rows`` training rows, stratified for classification, scored
   on at most ``search_valid_max_rows`` validation rows;
2. the winning settings are refitted on the whole sample and scored on the whole
   validation split, and again on half the sample for the learning curve;
3. ``select_best`` picks the best family on that validation score, and
   ``compose_model`` puts the fitted features step and the winning head into the
   one ``Pipeline`` that is evaluated, registered and served.

Families:

``linear``
    LogisticRegression (classification) or Ridge (regression); ``cat__`` codes are
    one-hot encoded (missing as its own level) into a sparse matrix, numerics pass
    through. Searches ``C`` / ``alpha``.
``hist_gradient_boosting``
    HistGradientBoosting with native categorical support for the ``cat__`` columns
    (NaN codes go to the missing-value bin). Searches the learning rate, tree
    size, leaf size, L2 penalty and number of iterations.
``random_forest`` / ``extra_trees``
    NaN codes become -1; every tree is grown on a bootstrap sample of at most
    ``FOREST_ROWS_PER_TREE`` rows, which bounds the cost on large training sets.
    Searches depth, leaf size and features per split.

Scores come from ``components.evaluate``'s metric functions, so the number the
search and the selection optimize is exactly the number evaluation reports and
the gate judges.
"""

from __future__ import annotations

from kubeloop.components.train.base import (
    _MAX_MESSAGE_CHARS,
    _MAX_WARNINGS,
    BASELINE,
    FAMILIES,
    FOREST_ROWS_PER_TREE,
    FOREST_TREES,
    MISSING_CODE,
    SINGLE_THREAD_CELLS,
    TASKS,
    TRANSFORM_BLOCK_ROWS,
    TrainError,
    _check_family,
    _check_metric,
    _check_task,
    _fmt,
    _plain,
    _short,
    _usable_score,
)
from kubeloop.components.train.baseline import (
    NOISE_CONFIDENCE,
    NOISE_REPLICATES,
    _outputs,
    _try_compare_with_baseline,
    baseline_candidate,
    compare_with_baseline,
    fit_baseline,
    paired_improvement,
)
from kubeloop.components.train.curve import (
    LARGE_ENOUGH,
    MIN_HALF_ROWS,
    MIN_RELATIVE_GAIN,
    MORE_DATA,
    MORE_ROWS,
    UNDEFINED,
    _fmt_or_na,
    curve_note,
    curve_verdict,
    learning_curve,
)
from kubeloop.components.train.families import (
    _FORESTS,
    CappedExtraTreesClassifier,
    CappedExtraTreesRegressor,
    CappedRandomForestClassifier,
    CappedRandomForestRegressor,
    Float32HoldoutHGBClassifier,
    Float32HoldoutHGBRegressor,
    _distributions,
    _final_estimator,
    _Float32Holdout,
    _model,
    _RowCappedForest,
    _set_params,
    make_head,
    search_settings,
)
from kubeloop.components.train.inputs import (
    _as_labels,
    _check_frame,
    _check_inputs,
    model_inputs,
)
from kubeloop.components.train.ops import (
    baseline_op,
    select_op,
    train_op,
)
from kubeloop.components.train.report import (
    _advice,
    _score_text,
    candidate_notes,
    leaderboard_markdown,
    learning_note,
    sample_text,
    within_noise,
)
from kubeloop.components.train.sample import (
    _rows,
    _take_parquet,
    group_sample_rows,
    read_training_sample,
    sample_rows,
    subsample_rows,
)
from kubeloop.components.train.scoring import (
    _label_position,
    _proba_over,
    _threads,
    score,
)
from kubeloop.components.train.search import (
    CandidateResult,
    _fit,
    _improves,
    search_family,
)
from kubeloop.components.train.selection import (
    _check_fitted,
    candidate_to_dict,
    compose_model,
    leaderboard,
    select_best,
)
from kubeloop.components.train.step import (
    BYTES_PER_CELL,
    MIN_SAMPLE_ROWS,
    RESERVED_BYTES,
    VALID_BYTES_PER_CELL,
    _sample_frame,
    sample_size,
    train_candidate,
    train_step,
)

__all__ = [
    "BASELINE",
    "BYTES_PER_CELL",
    "CandidateResult",
    "CappedExtraTreesClassifier",
    "CappedExtraTreesRegressor",
    "CappedRandomForestClassifier",
    "CappedRandomForestRegressor",
    "FAMILIES",
    "FOREST_ROWS_PER_TREE",
    "FOREST_TREES",
    "Float32HoldoutHGBClassifier",
    "Float32HoldoutHGBRegressor",
    "LARGE_ENOUGH",
    "MIN_HALF_ROWS",
    "MIN_RELATIVE_GAIN",
    "MIN_SAMPLE_ROWS",
    "MISSING_CODE",
    "MORE_DATA",
    "MORE_ROWS",
    "NOISE_CONFIDENCE",
    "NOISE_REPLICATES",
    "RESERVED_BYTES",
    "SINGLE_THREAD_CELLS",
    "TASKS",
    "TRANSFORM_BLOCK_ROWS",
    "TrainError",
    "UNDEFINED",
    "VALID_BYTES_PER_CELL",
    "_FORESTS",
    "_Float32Holdout",
    "_MAX_MESSAGE_CHARS",
    "_MAX_WARNINGS",
    "_RowCappedForest",
    "_advice",
    "_as_labels",
    "_check_family",
    "_check_fitted",
    "_check_frame",
    "_check_inputs",
    "_check_metric",
    "_check_task",
    "_distributions",
    "_final_estimator",
    "_fit",
    "_fmt",
    "_fmt_or_na",
    "_improves",
    "_label_position",
    "_model",
    "_outputs",
    "_plain",
    "_proba_over",
    "_rows",
    "_sample_frame",
    "_score_text",
    "_set_params",
    "_short",
    "_take_parquet",
    "_threads",
    "_try_compare_with_baseline",
    "_usable_score",
    "baseline_candidate",
    "baseline_op",
    "candidate_notes",
    "candidate_to_dict",
    "compare_with_baseline",
    "compose_model",
    "curve_note",
    "curve_verdict",
    "fit_baseline",
    "group_sample_rows",
    "leaderboard",
    "leaderboard_markdown",
    "learning_curve",
    "learning_note",
    "make_head",
    "model_inputs",
    "paired_improvement",
    "read_training_sample",
    "sample_rows",
    "sample_size",
    "sample_text",
    "score",
    "search_family",
    "search_settings",
    "select_best",
    "select_op",
    "subsample_rows",
    "train_candidate",
    "train_op",
    "train_step",
    "within_noise",
]
