"""The report's figures as inline SVG (matplotlib, Agg backend): text stays text, nothing is fetched.

Each function takes plain report data and returns an SVG string, or None when there is nothing to draw.
"""

from __future__ import annotations

import io
import re
from typing import Any, Optional, Sequence

_STYLE = {
    "svg.fonttype": "none",
    "svg.hashsalt": "fmtool",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def _figure(width: float = 6.0, height: float = 3.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.rc_context(_STYLE):
        figure, axes = plt.subplots(figsize=(width, height))
    return figure, axes


def _svg(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    with plt.rc_context(_STYLE):
        figure.tight_layout()
        figure.savefig(buffer, format="svg", metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    plt.close(figure)
    return re.sub(r"^<\?xml[^>]*>\s*(<!DOCTYPE[^>]*>\s*)?", "", buffer.getvalue())


def training_curves(records: Sequence[dict[str, Any]], metric: Optional[str]) -> Optional[str]:
    """Training loss and learning rate by update; the validation metric on a second axis."""
    train = [r for r in records if r.get("split") == "train" and "loss" in r]
    evaluations = [r for r in records if r.get("split") == "validation" and metric in r]
    if not train and not evaluations:
        return None
    figure, axes = _figure()
    if train:
        axes.plot(
            [r["step"] for r in train],
            [r["loss"] for r in train],
            "o-",
            markersize=3,
            color="#2563eb",
            label="train loss",
        )
        axes.set_ylabel("train loss")
    axes.set_xlabel("update")
    if evaluations:
        other = axes.twinx()
        other.plot(
            [r["step"] for r in evaluations],
            [r[metric] for r in evaluations],
            "o-",
            color="#16a34a",
            label=f"validation {metric}",
        )
        other.set_ylabel(f"validation {metric}")
    figure.legend(loc="upper center", ncol=2, frameon=False)
    return _svg(figure)


def before_after(metrics: dict[str, dict[str, dict[str, float]]]) -> Optional[str]:
    """Each split's headline metrics before and after training, side by side."""
    after = metrics.get("after", {})
    rows = [
        (f"{split} {name}", metrics.get("before", {}).get(split, {}).get(name), value)
        for split, values in after.items()
        for name, value in values.items()
        if isinstance(value, float) and name not in ("loss", "perplexity")
    ]
    if not rows:
        return None
    figure, axes = _figure(6.0, 0.4 * len(rows) + 1.0)
    positions = range(len(rows))
    axes.barh([p + 0.2 for p in positions], [r[1] or 0.0 for r in rows], height=0.4, color="#cbd5e1", label="before")
    axes.barh([p - 0.2 for p in positions], [r[2] for r in rows], height=0.4, color="#2563eb", label="after")
    axes.set_yticks(list(positions), [r[0] for r in rows])
    axes.invert_yaxis()
    axes.legend(frameon=False)
    return _svg(figure)


def confusion_matrix(labels: Sequence[str], matrix: Sequence[Sequence[int]]) -> Optional[str]:
    if not labels or len(labels) > 30:
        return None
    figure, axes = _figure(1.2 + 0.45 * len(labels), 1.0 + 0.4 * len(labels))
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(labels)), labels, rotation=90)
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("gold")
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            axes.text(j, i, str(count), ha="center", va="center", fontsize=7)
    return _svg(figure)


def _intervals(rows: Sequence[dict[str, Any]], value: str) -> tuple[list[float], list[float]]:
    values = [r[value] for r in rows]
    low = [max(0.0, v - (r.get(f"{value}_ci") or [v, v])[0]) for v, r in zip(values, rows)]
    high = [max(0.0, (r.get(f"{value}_ci") or [v, v])[1] - v) for v, r in zip(values, rows)]
    return low, high


def group_bars(rows: Sequence[dict[str, Any]]) -> Optional[str]:
    """Fairness: each group's primary metric with its bootstrap interval, one colour per feature."""
    if not rows:
        return None
    metric = next((k for k in ("recall", "accuracy", "selection_rate", "f1") if k in rows[0]), None)
    if metric is None:
        return None
    rows = [r for r in rows if r.get(metric) is not None]
    figure, axes = _figure(6.0, 0.35 * len(rows) + 1.0)
    colours = {feature: f"C{i}" for i, feature in enumerate(dict.fromkeys(r["feature"] for r in rows))}
    axes.barh(
        range(len(rows)),
        [r[metric] for r in rows],
        xerr=_intervals(rows, metric),
        color=[colours[r["feature"]] for r in rows],
        capsize=3,
    )
    axes.set_yticks(range(len(rows)), [f"{r['feature']}: {r['group']}" for r in rows])
    axes.invert_yaxis()
    axes.set_xlabel(f"{metric} (95% interval)")
    return _svg(figure)


def pass_rates(rows: Sequence[dict[str, Any]]) -> Optional[str]:
    """Robustness: each test's pass rate with its Wilson interval and its threshold."""
    rows = [r for r in rows if r.get("pass_rate") is not None]
    if not rows:
        return None
    figure, axes = _figure(6.0, 0.3 * len(rows) + 1.0)
    colours = [
        "#16a34a" if r.get("status") == "pass" else "#dc2626" if r.get("status") == "fail" else "#ca8a04" for r in rows
    ]
    axes.barh(
        range(len(rows)), [r["pass_rate"] for r in rows], xerr=_intervals(rows, "pass_rate"), color=colours, capsize=2
    )
    axes.scatter(
        [r.get("min_pass_rate", 0) for r in rows], range(len(rows)), marker="|", s=200, color="black", label="threshold"
    )
    axes.set_yticks(range(len(rows)), [r["test"] for r in rows])
    axes.invert_yaxis()
    axes.set_xlim(0, 1.02)
    axes.set_xlabel("pass rate (95% interval)")
    return _svg(figure)


def roc_curves(rows: Sequence[dict[str, Any]]) -> Optional[str]:
    """Membership inference: each attack's ROC curve against chance."""
    if not rows:
        return None
    figure, axes = _figure(4.0, 3.6)
    for attack in dict.fromkeys(r["attack"] for r in rows):
        points = [r for r in rows if r["attack"] == attack]
        axes.plot([p["fpr"] for p in points], [p["tpr"] for p in points], label=attack)
    axes.plot([0, 1], [0, 1], "--", color="grey", label="chance")
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.legend(frameon=False)
    return _svg(figure)


def reliability(rows: Sequence[dict[str, Any]]) -> Optional[str]:
    """Calibration: accuracy against confidence per bin, bars sized by count; the diagonal is perfect calibration."""
    rows = [r for r in rows if r.get("count")]
    if not rows:
        return None
    figure, axes = _figure(4.0, 3.6)
    axes.bar(
        [(r["low"] + r["high"]) / 2 for r in rows],
        [r["accuracy"] for r in rows],
        width=[r["high"] - r["low"] for r in rows],
        color="#2563eb",
        alpha=0.7,
        edgecolor="white",
        label="accuracy",
    )
    axes.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    axes.scatter([r["confidence"] for r in rows], [r["accuracy"] for r in rows], s=10, color="black")
    axes.set_xlabel("confidence")
    axes.set_ylabel("accuracy")
    axes.legend(frameon=False)
    return _svg(figure)


# which figure each audit family's tables give
_AUDIT_FIGURES = {
    "fairness": ("groups", group_bars, "each group's metric with its interval"),
    "robustness": ("tests", pass_rates, "pass rate per perturbation test"),
    "membership": ("roc", roc_curves, "membership-inference ROC"),
    "calibration": ("reliability", reliability, "reliability diagram"),
}


def audit_figure(audit: dict[str, Any]) -> Optional[tuple[str, str]]:
    """(caption, SVG) for an audit entry of the report, when its family has a figure and data for it."""
    if audit["name"] not in _AUDIT_FIGURES:
        return None
    table, draw, caption = _AUDIT_FIGURES[audit["name"]]
    drawn = draw(audit["tables"].get(table, []))
    return (caption, drawn) if drawn else None


def pareto_scatter(runs: Sequence[Any], used: Sequence[str]) -> list[tuple[str, str]]:
    """For each objective besides quality: quality against it, runs on the Pareto front filled and labelled."""
    if "quality" not in used:
        return []
    out = []
    for objective in [o for o in used if o != "quality"]:
        figure, axes = _figure(4.5, 3.4)
        # front runs drawn last, so a dominated run on the same spot does not hide one
        for run in sorted(runs, key=lambda r: r.on_front):
            axes.scatter(
                run.objectives[objective],
                run.objectives["quality"],
                s=40,
                color="#2563eb" if run.on_front else "white",
                edgecolor="#2563eb",
            )
            if run.on_front:
                axes.annotate(
                    run.path.name,
                    (run.objectives[objective], run.objectives["quality"]),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        axes.set_xlabel(objective)
        axes.set_ylabel("quality")
        out.append((f"quality against {objective} (filled: Pareto front)", _svg(figure)))
    return out


def attribution_figure(rows: Sequence[dict[str, Any]]) -> Optional[str]:
    """One line per check from P's value to F's, F's end with Δ's interval around it, the threshold marked."""
    if not rows:
        return None
    figure, axes = _figure(6.0, 0.45 * len(rows) + 1.0)
    for y, row in enumerate(rows):
        low, high = row["interval"]
        axes.plot([row["reference"], row["candidate"]], [y, y], color="#9ca3af", zorder=1)
        axes.scatter(
            [row["reference"]], [y], color="white", edgecolor="#2563eb", zorder=2, label="P" if not y else None
        )
        axes.scatter([row["candidate"]], [y], color="#2563eb", zorder=2, label="F" if not y else None)
        below, above = row["candidate"] - (row["reference"] + low), row["reference"] + high - row["candidate"]
        axes.errorbar(
            row["candidate"],
            y,
            xerr=[[max(0.0, below)], [max(0.0, above)]],
            color="#2563eb",
            capsize=3,
            linewidth=0.8,
            zorder=1,
        )
        axes.scatter(
            [row["threshold"]], [y], marker="|", color="#b3261e", s=80, zorder=3, label="threshold" if not y else None
        )
    axes.set_yticks(range(len(rows)), [f"{row['check']} ({row['verdict']})" for row in rows], fontsize=7)
    axes.invert_yaxis()
    axes.set_xlabel("check value (F's bar: P + Δ's interval)", fontsize=8)
    axes.legend(fontsize=7, loc="best")
    return _svg(figure)
