"""The per-run report: report.json (versioned schema, for CI) and report.md / report.html (for people)."""

from __future__ import annotations

import datetime as dt
import html
import re
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any, Optional, Sequence

from markdown_it import MarkdownIt

from fmtool.audit.base import FAIL, INCONCLUSIVE, PASS, SKIP, worst_status
from fmtool.report import plots
from fmtool.runs import RunDir, write_json

SCHEMA_VERSION = 2
# statuses as words, not emoji: a server's headless browser often has no emoji font and draws empty boxes; the HTML
# page styles each word as a badge
_MARKS = {PASS: "PASS", FAIL: "FAIL", INCONCLUSIVE: "INCONCLUSIVE", SKIP: "SKIP"}
_MARKED = re.compile(r"(>|— )(" + "|".join(_MARKS.values()) + r")(?=<)")


def overall_status(audits: Sequence[dict[str, Any]]) -> str:
    return worst_status([a["status"] for a in audits])


def build_report(
    *,
    path: str,
    task: str,
    model: str,
    dataset: str | None,
    config: dict,
    data: dict,
    metrics: dict,
    audits: list[dict],
    provenance: dict,
    privacy: dict | None = None,
    attribution: dict | None = None,
) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "fmtool_version": version("fmtool"),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "status": overall_status(audits),
        "run": {"path": path, "task": task, "model": model, "dataset": dataset},
        "config": config,
        "data": data,
        "metrics": metrics,
        "audits": audits,
        "provenance": provenance,
        "privacy": privacy,
        "attribution": attribution,
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, float) for v in value):
        return f"[{value[0]:.3f}, {value[1]:.3f}]"
    return "" if value is None else str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> list[str]:
    if not rows:
        return ["(none)"]
    columns = list(columns or dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c)).replace("|", "\\|").replace("\n", " ") for c in columns) + " |")
    return lines


def _flatten(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in row.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _check_row(check: dict[str, Any], **first: str) -> dict[str, Any]:
    settle = ""
    if check["status"] == INCONCLUSIVE:
        settle = (
            f"~{check['needed']} examples would settle it"
            if check.get("needed")
            else "the interval straddles the threshold"
        )
    return {
        **first,
        "check": check["name"],
        "value": check["value"],
        "interval": check.get("interval"),
        "n": check.get("n"),
        "threshold": f"{'≤' if check['direction'] == 'max' else '≥'} {check['threshold']}",
        "status": _MARKS[check["status"]],
        "note": settle,
    }


ATTRIBUTION_HEADING = "## Where each finding comes from"


def _attribution(section: Optional[dict[str, Any]]) -> list[str]:
    """P (the foundation model frozen, its head trained) against F (the audited model) on the same items, per check,
    with the verdict and the rule that gave it."""
    if not section:
        return []
    lines = [ATTRIBUTION_HEADING, ""]
    if section.get("skipped"):
        return lines + [f"Not measured: {section['skipped']}.", ""]
    rows = [
        {
            "check": row["check"],
            "P": row["reference"],
            "F": row["candidate"],
            "Δ (F − P)": row["difference"],
            "interval": row["interval"],
            "p (Holm)": row["adjusted_p"],
            "verdict": row["verdict"],
            "seeds": row["seeds"],
            "items": row["items"],
            "test": row["test"],
        }
        for row in section["checks"]
    ]
    lines += [
        f"- P: {section['arms']['P']}; F: {section['arms']['F']}. The claim is {section['claim']}.",
        *[f"- **{name}**: {rule}" for name, rule in section["rules"].items()],
        f"- margin {section['margin']}, alpha {section['alpha']} (Holm-adjusted across the checks below)",
        "- validation figure of each replicate: "
        + "; ".join(f"{arm} {', '.join(_fmt(v) for v in values)}" for arm, values in section.get("quality", {}).items())
        + " (a probe twin that learned little passes invariance checks by predicting alike)",
        *[f"- not attributed: {name} ({why})" for name, why in section.get("not_attributed", {}).items()],
        "",
    ]
    return lines + markdown_table(rows) + [""]


def _provenance(provenance: dict[str, Any], audits: Sequence[dict[str, Any]]) -> list[str]:
    """The security section: what was loaded and how, with digests a reviewer can check, and what each audit family
    cost (the slowest first), so a CI budget can be planned."""
    files = [
        {"kind": kind.split("_")[0], "file": name, **digest}
        for kind in ("model_files", "data_files")
        for name, digest in provenance.get(kind, {}).items()
    ]
    environment = provenance.get("environment", {})
    lines = [
        "## Provenance and loading",
        "",
        "- weights: "
        f"{'safetensors only' if not provenance.get('allow_pickle') else 'pickle allowed (model.allow_pickle=true)'}; "
        f"trust_remote_code: {provenance.get('trust_remote_code', False)}",
        *(
            [f"- base model (--base-model): {base['path']}, config.json sha256 {base['config_sha256'][:16]}"]
            if (base := provenance.get("base_model"))
            else []
        ),
        f"- fmtool git commit: {environment.get('git_commit') or 'unknown'}; packages: "
        + ", ".join(f"{k} {v}" for k, v in environment.get("packages", {}).items() if v),
        "- audit time: "
        + ", ".join(
            f"{a['name']} {a['seconds']:.1f} s"
            for a in sorted(audits, key=lambda a: -(a.get("seconds") or 0))
            if a.get("seconds") is not None
        )
        + f" (total {sum(a.get('seconds') or 0 for a in audits):.1f} s)",
        "",
    ]
    return lines + markdown_table(files, ["kind", "file", "bytes", "sha256"]) + [""]


def markdown(report: dict[str, Any]) -> str:
    run = report["run"]
    lines = [
        f"# fmtool report: {run['task']} · {run['dataset'] or 'no dataset'}",
        "",
        f"- run: `{run['path']}`",
        f"- model: `{run['model']}`",
        f"- overall: **{_MARKS[report['status']]}**",
        f"- fmtool {report['fmtool_version']}, report schema {report['schema_version']}, {report['created']}",
        "",
    ]
    if report["data"]:
        lines += ["## Data", ""] + markdown_table([{"split": k, **v} for k, v in report["data"].items()]) + [""]
    after = report["metrics"].get("after", {})
    if after:
        lines += ["## Metrics (before → after training)", ""]
        rows = []
        for split, values in after.items():
            before = report["metrics"].get("before", {}).get(split, {})
            rows += [
                {"split": split, "metric": m, "before": before.get(m), "after": v}
                for m, v in values.items()
                if isinstance(v, float)
            ]
        lines += markdown_table(rows) + [""]
    if report.get("privacy"):
        dp = report["privacy"]
        lines += [
            "## Privacy",
            "",
            f"Trained with DP-SGD (Opacus): **epsilon {dp['epsilon']:.2f}** at delta {dp['delta']:g} "
            f"({dp['accountant']} accountant), "
            f"noise multiplier {dp['noise_multiplier']:.3f}, per-example clipping norm {dp['max_grad_norm']}, "
            f"sampling rate {dp['sample_rate']:.4f}, "
            f"{dp['steps']} steps.",
            "",
        ]
    lines += (
        ["## Audits", ""]
        + markdown_table(
            [
                {
                    "audit": a["name"],
                    "version": a["version"],
                    "status": _MARKS[a["status"]],
                    "checks failed": sum(c["status"] == FAIL for c in a["checks"]),
                    "inconclusive": sum(c["status"] == INCONCLUSIVE for c in a["checks"]),
                    "checks": len(a["checks"]),
                    "seconds": a.get("seconds"),
                }
                for a in report["audits"]
            ]
        )
        + [""]
    )
    unsettled = [(a["name"], c) for a in report["audits"] for c in a["checks"] if c["status"] in (FAIL, INCONCLUSIVE)]
    if unsettled:
        lines += (
            ["## Checks that did not pass", ""]
            + markdown_table(
                [_check_row(c, audit=name) for name, c in sorted(unsettled, key=lambda x: x[1]["status"] != FAIL)]
            )
            + [""]
        )
    lines += _attribution(report.get("attribution"))
    lines += _provenance(report["provenance"], report["audits"])
    for audit in report["audits"]:
        lines += [f"### {audit['name']} — {_MARKS[audit['status']]}", ""]
        lines += markdown_table([_check_row(c) for c in audit["checks"]]) + [""]
        for name, rows in audit["tables"].items():
            lines += [f"**{name}**", ""] + markdown_table([_flatten(r) for r in rows]) + [""]
        lines += [f"- note: {w}" for w in audit["warnings"]] + [""]
    return "\n".join(lines).rstrip() + "\n"


PAGE_STYLE = (
    "body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:collapse;margin:.5em 0}"
    "td,th{border:1px solid #ccc;padding:.2em .5em;font-size:90%}figure{margin:.5em "
    "0}figcaption{font-size:85%;color:#555}"
    ".badge{display:inline-block;padding:0 .45em;border-radius:.3em;font-weight:bold;font-size:85%;"
    "text-transform:uppercase}.badge.pass{background:#e6f4ea;color:#1e6b30}.badge.fail{background:#fdecea;"
    "color:#b3261e}.badge.inconclusive{background:#fff4e0;color:#8a5300}.badge.skip{background:#eee;color:#555}"
    "svg{max-width:100%;height:auto}.attribution span{padding:0 2px}"
)


@dataclass(frozen=True)
class RunCurves:
    """What the HTML report plots besides report.json: the run's metrics.jsonl records and its confusion matrix."""

    records: list[dict[str, Any]]
    metric: Optional[str] = None
    confusion: Optional[dict[str, Any]] = None


def _figure(caption: str, svg: str, kind: str) -> str:
    return f'<figure class="plot" data-plot="{kind}">{svg}<figcaption>{html.escape(caption)}</figcaption></figure>'


def _highlights(rows: Sequence[dict[str, Any]]) -> str:
    """The explain audit's listed predictions, their three most supporting words shaded by attribution."""
    lines = []
    for row in rows:
        weights = {}
        for item in str(row.get("top_words", "")).split(", "):
            word, _, value = item.rpartition(" ")
            try:
                weights[word] = max(weights.get(word, 0.0), float(value))
            except ValueError:
                continue
        scale = max(weights.values(), default=0.0) or 1.0
        words = []
        for word in str(row.get("text", "")).split():
            level = max(0.0, weights.get(word, 0.0) / scale)
            words.append(
                f'<span style="background:rgba(22,163,74,{level:.2f})">{html.escape(word)}</span>'
                if level
                else html.escape(word)
            )
        target = html.escape(str(row.get("label", ""))) + (
            f" · {html.escape(str(row['entity']))}" if row.get("entity") else ""
        )
        lines.append(f'<p class="attribution"><b>{target}</b> ({row.get("probability", 0):.2f}): {" ".join(words)}</p>')
    return (
        f'<figure class="plot" data-plot="attributions">{"".join(lines)}<figcaption>top-attributed '
        "words</figcaption></figure>"
        if lines
        else ""
    )


def _run_figures(report: dict[str, Any], curves: Optional[RunCurves]) -> str:
    parts = []
    if curves is not None and (drawn := plots.training_curves(curves.records, curves.metric)):
        parts.append(_figure("training loss and validation metric by update", drawn, "curves"))
    if drawn := plots.before_after(report["metrics"]):
        parts.append(_figure("metrics before and after training", drawn, "before_after"))
    if (
        curves is not None
        and curves.confusion
        and (drawn := plots.confusion_matrix(curves.confusion["labels"], curves.confusion["matrix"]))
    ):
        parts.append(_figure("validation confusion matrix", drawn, "confusion"))
    return "".join(parts)


def _badge(status: str) -> str:
    return f'<span class="badge {status}">{status}</span>'


def to_html(markdown_text: str, report: Optional[dict[str, Any]] = None, curves: Optional[RunCurves] = None) -> str:
    """The Markdown report as one self-contained HTML page (markdown-it-py, CommonMark with tables), with the
    figures of the run and of each audit (inline SVG) under their sections."""
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown_text)
    body = _MARKED.sub(lambda m: m.group(1) + _badge(m.group(2).lower()), body)
    if report is not None:
        metrics_heading = "<h2>Metrics (before → after training)</h2>"
        figures = _run_figures(report, curves)
        body = (
            body.replace(metrics_heading, metrics_heading + figures, 1) if metrics_heading in body else figures + body
        )
        attribution = (report.get("attribution") or {}).get("checks")
        heading = f"<h2>{html.escape(ATTRIBUTION_HEADING.removeprefix('## '))}</h2>"
        if attribution and heading in body and (drawn := plots.attribution_figure(attribution)):
            caption = "each check's value for P (foundation model, head trained) and F (the audited model)"
            body = body.replace(heading, heading + _figure(caption, drawn, "attribution"), 1)
        for audit in report["audits"]:
            heading = f"<h3>{html.escape(audit['name'])} — {_badge(audit['status'])}</h3>"
            extra = ""
            if drawn := plots.audit_figure(audit):
                extra = _figure(drawn[0], drawn[1], audit["name"])
            if audit["name"] == "explain":
                extra = _highlights(audit["tables"].get("explanations", []))
            body = body.replace(heading, heading + extra, 1)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>fmtool "
        f"report</title><style>{PAGE_STYLE}</style></head><body>{body}</body></html>\n"
    )


def write_report(out: RunDir, report: dict[str, Any], curves: Optional[RunCurves] = None) -> None:
    """report.json, report.md and report.html in out's report folder."""
    write_json(out.report_json, report)
    text = markdown(report)
    out.report_markdown.write_text(text, encoding="utf-8")
    out.report_html.write_text(to_html(text, report, curves), encoding="utf-8")
