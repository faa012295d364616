"""What the leaderboard, the model card and the run summary say about the candidates."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from kubeloop.components.train.base import (
    BASELINE,
    _fmt,
    _usable_score,
)
from kubeloop.components.train.baseline import (
    NOISE_CONFIDENCE,
)
from kubeloop.components.train.curve import (
    MORE_DATA,
    MORE_ROWS,
    curve_note,
)
from kubeloop.components.train.selection import (
    leaderboard,
)


def within_noise(record: dict[str, Any]) -> bool:
    """The candidate's validation score is within noise of the baseline's."""
    return bool((record.get("vs_baseline") or {}).get("within_noise"))


def candidate_notes(record: dict[str, Any]) -> list[str]:
    """What a user must know about a candidate that may not have learnt: a score within
    noise of the baseline, and the warnings of its final fit (convergence first)."""
    notes = []
    vs = record.get("vs_baseline") or {}
    if vs.get("within_noise"):
        notes.append(
            f"within noise of the baseline: {vs.get('metric')} {_fmt(record.get('valid_score'))} "
            f"against {_fmt(vs.get('baseline_score'))}, improvement {_fmt(vs.get('estimate'))} "
            f"({vs.get('confidence', NOISE_CONFIDENCE):.0%} interval {_fmt(vs.get('low'))} to "
            f"{_fmt(vs.get('high'))})"
        )
    notes += [f"fit warned: {w}" for w in record.get("warnings") or []]
    if (record.get("learning_curve") or {}).get("verdict") in (MORE_ROWS, MORE_DATA):
        notes.append(curve_note(record))
    return notes


def sample_text(record: dict[str, Any]) -> str | None:
    """How many rows the candidate trained on, of how many, and its learning curve."""
    n_split = record.get("n_split_rows")
    if n_split is None:
        return None
    rows = int(record.get("n_train_rows") or 0)
    text = (
        f"trained on all {rows:,} labelled training rows" if rows >= n_split
        else f"trained on a sample of {rows:,} of {int(n_split):,} labelled training rows "
        f"(train.max_rows {int(record.get('max_rows') or 0):,})"
    )
    note = curve_note(record)
    return f"{text}; {note}" if note else text


def _advice(family: str, record: dict[str, Any]) -> str:
    warned = " ".join(record.get("warnings") or [])
    tips = []
    if "ConvergenceWarning" in warned:
        tips.append("its solver did not converge: look for unscaled or near-constant columns")
    if family == "linear":
        tips.append("a tree family (train.families: [linear, hist_gradient_boosting]) for "
                    "interactions and thresholds a linear model cannot express")
    else:
        tips.append("another family (train.families) or a larger search (train.search_iterations)")
    tips.append("check that the features carry signal about the target (the validation report "
                "lists the columns used and left out)")
    return "; ".join(tips)


def learning_note(results: Iterable[dict[str, Any]], families: Sequence[str] | None = None) -> str | None:
    """Why the run has no model that learnt anything, or None when one did: every
    candidate's validation score is within noise of the baseline. Names the families
    and what to try; with a single allowed family, that family."""
    candidates = [r for r in results if r.get("family") != BASELINE]
    if not candidates or not all(within_noise(r) for r in candidates):
        return None
    names = [str(r.get("family")) for r in candidates]
    allowed = list(families) if families else names
    head = (
        f"the only allowed family, {names[0]}, learnt nothing"
        if len(allowed) == 1
        else f"no family learnt anything ({', '.join(names)})"
    )
    detail = "; ".join(
        f"{r.get('family')}: {candidate_notes(r)[0]}" for r in candidates
    )
    tips = "; ".join(f"for {r.get('family')} try {_advice(str(r.get('family')), r)}" for r in candidates[:1])
    return f"{head}: {detail}. To try: {tips}."


def leaderboard_markdown(results: Iterable[dict[str, Any]], metric: str, *, chosen: str) -> str:
    """The candidates ranked on validation, for the KFP UI and the registry; a
    candidate within noise of the baseline or whose fit warned says so."""
    items = list(results)
    lines = [
        f"# Candidates on the validation split ({metric})",
        "",
        "| rank | family | " + metric + " | settings tried | search s | final fit s | best settings "
        "| notes |",
        "|---:|---|---:|---:|---:|---:|---|---|",
    ]
    for rank, item in enumerate(leaderboard(items, metric), start=1):
        value = _usable_score(item.get("valid_score"))
        shown = "n/a" if value is None else f"{value:.4f}"
        mark = " **(chosen)**" if item.get("family") == chosen else ""
        if within_noise(item):
            mark += " (within noise of the baseline)"
        params = ", ".join(f"{k}={v}" for k, v in sorted((item.get("params") or {}).items()))
        notes = "; ".join(candidate_notes(item)).replace("|", "\\|") or "-"
        lines.append(
            f"| {rank} | {item.get('family')}{mark} | {shown} | {len(item.get('search') or [])} "
            f"| {float(item.get('search_seconds') or 0):.1f} | {float(item.get('fit_seconds') or 0):.1f} "
            f"| {params or '-'} | {notes} |"
        )
    note = learning_note(items)
    if note:
        lines += ["", f"**No candidate learnt anything**: {note}"]
    picked = [i for i in items if i.get("family") == chosen and sample_text(i)]
    if picked:
        lines += ["", f"**{chosen}** {sample_text(picked[0])}."]
    return "\n".join(lines) + "\n"


def _score_text(record: dict[str, Any]) -> str:
    value = _usable_score(record.get("valid_score"))
    return f"valid {record['metric']} " + ("n/a" if value is None else f"{value:.4f}")
