"""The per-run report: report.json (versioned schema, for CI) and report.md / report.html (for people)."""

from __future__ import annotations

import datetime as dt
import html
from pathlib import Path
from typing import Any, Sequence

from fmtool import __version__
from fmtool.audit.base import FAIL, PASS, SKIP
from fmtool.runs import write_json

SCHEMA_VERSION = 1
_MARKS = {PASS: "✅ pass", FAIL: "❌ fail", SKIP: "⚪ skip"}


def overall_status(audits: Sequence[dict[str, Any]]) -> str:
    statuses = {a["status"] for a in audits}
    return FAIL if FAIL in statuses else PASS if PASS in statuses else SKIP


def build_report(*, path: str, task: str, model: str, dataset: str | None, config: dict, data: dict, metrics: dict, audits: list[dict]) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "fmtool_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "status": overall_status(audits),
        "run": {"path": path, "task": task, "model": model, "dataset": dataset},
        "config": config,
        "data": data,
        "metrics": metrics,
        "audits": audits,
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, float) for v in value):
        return f"[{value[0]:.3f}, {value[1]:.3f}]"
    return "" if value is None else str(value)


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> list[str]:
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


def markdown(report: dict[str, Any]) -> str:
    run = report["run"]
    lines = [f"# fmtool report: {run['task']} · {run['dataset'] or 'no dataset'}", "",
             f"- run: `{run['path']}`", f"- model: `{run['model']}`", f"- overall: **{_MARKS[report['status']]}**",
             f"- fmtool {report['fmtool_version']}, report schema {report['schema_version']}, {report['created']}", ""]
    if report["data"]:
        lines += ["## Data", ""] + _table([{"split": k, **v} for k, v in report["data"].items()]) + [""]
    after = report["metrics"].get("after", {})
    if after:
        lines += ["## Metrics (before → after training)", ""]
        rows = []
        for split, values in after.items():
            before = report["metrics"].get("before", {}).get(split, {})
            rows += [{"split": split, "metric": m, "before": before.get(m), "after": v} for m, v in values.items() if isinstance(v, float)]
        lines += _table(rows) + [""]
    lines += ["## Audits", ""] + _table([{"audit": a["name"], "version": a["version"], "status": _MARKS[a["status"]],
                                          "checks failed": sum(c["status"] == FAIL for c in a["checks"]), "checks": len(a["checks"])} for a in report["audits"]]) + [""]
    for audit in report["audits"]:
        lines += [f"### {audit['name']} — {_MARKS[audit['status']]}", ""]
        lines += _table([{"check": c["name"], "value": c["value"], "threshold": f"{'≤' if c['direction'] == 'max' else '≥'} {c['threshold']}",
                          "status": _MARKS[c["status"]]} for c in audit["checks"]]) + [""]
        for name, rows in audit["tables"].items():
            lines += [f"**{name}**", ""] + _table([_flatten(r) for r in rows]) + [""]
        lines += [f"- note: {w}" for w in audit["warnings"]] + [""]
    return "\n".join(lines).rstrip() + "\n"


def to_html(markdown_text: str) -> str:
    """A dependency-free rendering of the Markdown above (headings, lists, tables, paragraphs)."""
    body, in_table = [], False
    for line in markdown_text.splitlines():
        if line.startswith("|") and set(line.replace("|", "")) <= set("-"):
            continue
        if line.startswith("|"):
            cells = [html.escape(c.strip()) for c in line.strip("|").split(" | ")]
            if not in_table:
                body.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in cells) + "</tr>")
                in_table = True
            else:
                body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        level = len(line) - len(line.lstrip("#"))
        if level:
            body.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line.startswith("- "):
            body.append(f"<li>{html.escape(line[2:])}</li>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    if in_table:
        body.append("</table>")
    style = "body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .5em;font-size:90%}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>fmtool report</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n"


def write_report(report_dir: Path, report: dict[str, Any]) -> None:
    write_json(report_dir / "report.json", report)
    text = markdown(report)
    (report_dir / "report.md").write_text(text, encoding="utf-8")
    (report_dir / "report.html").write_text(to_html(text), encoding="utf-8")
