"""The monitoring report: one small self-contained HTML page (inline CSS and SVG,
no scripts, nothing fetched; the KFP UI shows it as an HTML artifact), the same
in Markdown, and the JSON verdict a pipeline branches on."""

from __future__ import annotations

import html
from typing import Any

_CSS = (
    "body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}"
    ".yes{color:#b00020;font-weight:600}.no{color:#2e7d32}.v{font-size:1.2em;padding:.5em;border-radius:4px}"
    ".retrain{background:#fdecea}.keep{background:#e8f5e9}small{color:#666}"
)
_REF, _CUR = "#607d8b", "#ff9800"


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _f(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def _bars(labels: list[str], ref: list[float], cur: list[float], width: int = 260, height: int = 70) -> str:
    """Reference (grey) and current (orange) shares side by side, as inline SVG."""
    if not labels:
        return ""
    rs, cs = sum(ref) or 1.0, sum(cur) or 1.0
    p = [r / rs for r in ref]
    q = [c / cs for c in cur]
    top = max(p + q) or 1.0
    slot = width / len(labels)
    bar = max(slot / 2 - 1, 1)
    parts = [f'<svg width="{width}" height="{height}" role="img"><title>reference vs current</title>']
    for i, (a, b) in enumerate(zip(p, q, strict=True)):
        x = i * slot
        for j, (v, color) in enumerate(((a, _REF), (b, _CUR))):
            h = v / top * (height - 2)
            parts.append(
                f'<rect x="{x + j * bar:.1f}" y="{height - h:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{color}">'
                f"<title>{_e(labels[i])}: {v:.3f}</title></rect>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _column_chart(r: dict[str, Any]) -> str:
    if r.get("kind") == "numeric" and r.get("bins"):
        b = r["bins"]
        edges = [f"{e:.3g}" for e in b["edges"]]
        labels = [f"<= {e}" for e in edges] + [f"> {edges[-1]}" if edges else "all"]
        return _bars(labels, b["reference"], b["current"])
    if r.get("kind") == "categorical" and r.get("categories"):
        c = r["categories"]
        return _bars(c["names"][:20], c["reference"][:20], c["current"][:20])
    return ""


def _scores(r: dict[str, Any]) -> str:
    if r.get("absent"):
        return "absent from the current data"
    keys = (
        ("ks_statistic", "ks_pvalue", "psi", "wasserstein_norm")
        if r.get("kind") == "numeric"
        else ("chi2_pvalue", "psi", "jensen_shannon", "unseen_rate")
    )
    out = [f"{k} {_f(r.get(k))}" for k in keys]
    out.append(f"missing {_f(r.get('missing_rate_reference'))} &rarr; {_f(r.get('missing_rate_current'))}")
    return "<br>".join(out)


def _line(points: list[tuple[str, float]], baseline: float | None, width: int = 420, height: int = 120) -> str:
    vals = [v for _, v in points if v is not None]
    if not vals:
        return ""
    allv = vals + ([baseline] if baseline is not None else [])
    lo, hi = min(allv), max(allv)
    span = (hi - lo) or 1.0
    n = len(points)

    def xy(i: int, v: float) -> tuple[float, float]:
        x = 10 + (width - 20) * (i / max(n - 1, 1))
        y = height - 10 - (height - 20) * (v - lo) / span
        return x, y

    parts = [f'<svg width="{width}" height="{height}" role="img"><title>metric per window</title>']
    if baseline is not None:
        y = xy(0, baseline)[1]
        parts.append(f'<line x1="0" x2="{width}" y1="{y:.1f}" y2="{y:.1f}" stroke="{_REF}" stroke-dasharray="4"/>')
    coords = [xy(i, v) for i, (_, v) in enumerate(points) if v is not None]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    parts.append(f'<polyline fill="none" stroke="{_CUR}" stroke-width="2" points="{line}"/>')
    for (x, y), (label, v) in zip(coords, [p for p in points if p[1] is not None], strict=True):
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{_CUR}"><title>{_e(label)}: {v:.4f}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def drift_html(drift: dict[str, Any], decay: dict[str, Any] | None = None, decision: dict[str, Any] | None = None,
               title: str = "kubeloop drift report") -> str:
    rows = []
    # Drifted columns first, then by the model's importance when known.
    entries = sorted(drift["columns"].items(), key=lambda kv: (not kv[1].get("drifted"), -(kv[1].get("importance") or 0)))
    if drift.get("prediction"):
        entries.append(("(prediction)", drift["prediction"]))
    for name, r in entries:
        verdict = '<span class="yes">drift</span>' if r.get("drifted") else '<span class="no">stable</span>'
        why = "<br>".join(_e(x) for x in r.get("reasons") or [])
        rows.append(
            f"<tr><td><b>{_e(name)}</b><br><small>{_e(r.get('kind'))}</small></td><td>{verdict}<br><small>{why}</small></td>"
            f"<td><small>{_scores(r)}</small></td><td>{_column_chart(r)}</td></tr>"
        )
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
    ]
    if decision is not None:
        cls = "retrain" if decision.get("retrain") else "keep"
        head = "Retrain" if decision.get("retrain") else "No retraining"
        reasons = "; ".join(decision.get("reasons") or []) or "no trigger"
        blocked = "; ".join(decision.get("blocked_by") or [])
        parts.append(f'<p class="v {cls}"><b>{head}</b>: {_e(reasons)}'
                     + (f"<br><small>held back by: {_e(blocked)}</small>" if blocked else "")
                     + (f"<br><small>labels: {_e(decision['label_rule'])}</small>" if decision.get("label_rule") else "")
                     + "</p>")
        for alert in decision.get("alerts") or []:
            parts.append(f'<p class="v retrain"><b>Alert</b>: {_e(alert)}</p>')
    parts.append(
        f"<p>{len(drift['drifted_columns'])} of {drift['n_columns']} columns drifted"
        f"{': ' + _e(', '.join(drift['drifted_columns'])) if drift['drifted_columns'] else ''}. "
        f"Reference rows {_e(drift.get('n_reference'))}, current rows {_e(drift.get('n_current'))}. "
        f'<small><span style="color:{_REF}">&#9632; reference</span> <span style="color:{_CUR}">&#9632; current</span></small></p>'
    )
    parts.append("<table><tr><th>column</th><th>verdict</th><th>scores</th><th>distribution</th></tr>")
    parts += rows
    parts.append("</table>")
    if drift.get("skipped"):
        parts.append("<p><small>Not compared: " + _e("; ".join(f"{k} ({v})" for k, v in drift["skipped"].items())) + "</small></p>")
    if decay:
        parts.append(_decay_html(decay))
    th = drift.get("thresholds") or {}
    parts.append("<p><small>Thresholds: " + _e(", ".join(f"{k} {v}" for k, v in th.items())) + "</small></p>")
    parts.append("</body></html>")
    return "".join(parts)


def _decay_html(decay: dict[str, Any]) -> str:
    metric = decay.get("metric")
    windows = decay.get("windows") or []
    out = [f"<h2>Model {_e(metric)} per window</h2>"]
    if not windows:
        out.append(f"<p>{_e(decay.get('note') or 'no labelled predictions')}</p>")
        return "".join(out)
    out.append(f"<p>At training: {_f(decay.get('training_value'), 4)}; over all labelled rows: "
               f"{_f(decay.get('value'), 4)} ({_e(decay.get('n_labeled'))} rows).</p>")
    out.append(_line([(w["start"], w.get("value")) for w in windows], decay.get("training_value")))
    out.append("<table><tr><th>window</th><th>rows</th><th>" + _e(metric) + "</th></tr>")
    for w in windows:
        out.append(f"<tr><td>{_e(w['start'])}</td><td>{w['n']}</td><td>{_f(w.get('value'), 4)}</td></tr>")
    out.append("</table>")
    return "".join(out)


def markdown(drift: dict[str, Any], decay: dict[str, Any] | None = None, decision: dict[str, Any] | None = None) -> str:
    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["# Monitoring report", ""]
    if decision is not None:
        lines += [f"**{'Retrain' if decision.get('retrain') else 'No retraining'}**: "
                  f"{cell('; '.join(decision.get('reasons') or []) or 'no trigger')}", ""]
        if decision.get("label_rule"):
            lines += [f"Labels: {cell(decision['label_rule'])}", ""]
        lines += [f"**Alert**: {cell(a)}" for a in decision.get("alerts") or []]
        if decision.get("alerts"):
            lines.append("")
    lines += [f"{len(drift['drifted_columns'])} of {drift['n_columns']} columns drifted.", "",
              "| column | kind | drift | scores |", "|---|---|---|---|"]
    for name, r in drift["columns"].items():
        keys = ("ks_statistic", "psi", "wasserstein_norm") if r.get("kind") == "numeric" else ("jensen_shannon", "psi", "unseen_rate")
        scores = ", ".join(f"{k} {_f(r.get(k))}" for k in keys)
        lines.append(f"| {cell(name)} | {r.get('kind')} | {'yes' if r.get('drifted') else 'no'} | {scores} |")
    if decay and decay.get("windows"):
        lines += ["", f"## {decay['metric']} per window (training: {_f(decay.get('training_value'), 4)})", "",
                  "| window | rows | value |", "|---|---|---|"]
        lines += [f"| {w['start']} | {w['n']} | {_f(w.get('value'), 4)} |" for w in decay["windows"]]
    return "\n".join(lines) + "\n"


def verdict(drift: dict[str, Any], decay: dict[str, Any] | None, decision: dict[str, Any]) -> dict[str, Any]:
    """The JSON verdict: small, what a pipeline or a person needs to act."""
    return {
        "retrain": bool(decision.get("retrain")),
        "reasons": decision.get("reasons") or [],
        "blocked_by": decision.get("blocked_by") or [],
        "label_rule": decision.get("label_rule"),
        "drifted_columns": drift["drifted_columns"],
        "prediction_drifted": drift.get("prediction_drifted", False),
        "n_current": drift.get("n_current"),
        "metric": (decay or {}).get("metric"),
        "metric_value": (decay or {}).get("value"),
        "metric_training": (decay or {}).get("training_value"),
        "n_labeled": (decay or {}).get("n_labeled", 0),
        "alerts": decision.get("alerts") or [],
    }
