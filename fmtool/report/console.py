"""The only module that talks to the terminal through rich: progress bars and summary tables."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

# columns of a console without a terminal: long enough for a family's check name and a one-line error
_LOG_WIDTH = 400

console = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=_LOG_WIDTH)


class RichProgress:
    """trainer.loop.Progress drawn with rich; one bar at a time."""

    def __init__(self) -> None:
        self._bar: Progress | None = None
        self._task = None

    def start(self, description: str, total: int) -> None:
        self.stop()
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
            transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(description, total=total, info="")

    def advance(self, n: int = 1, **fields: Any) -> None:
        if self._bar is not None:
            info = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
            self._bar.update(self._task, advance=n, **({"info": info} if info else {}))

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def results_table(results: dict[str, Any]) -> Table:
    """Before / after metrics for each evaluated split."""
    table = Table(title=f"{results['task']} · {results['dataset']} · {results['model']}")
    table.add_column("split")
    table.add_column("metric")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    for split, after in results["after"].items():
        before = results["before"].get(split, {})
        for metric, value in after.items():
            if isinstance(value, float):
                table.add_row(split, metric, _fmt(before.get(metric, "")), _fmt(value))
    return table


def print_results(results: dict[str, Any], run_path: str) -> None:
    console.print(results_table(results))
    train = results.get("train", {})
    if train:
        console.print(
            f"trained {train['updates']} updates in {train['seconds']:.1f} s ({train['samples_per_second']:.1f} "
            f"samples/s); run: {run_path}"
        )


def print_metrics(title: str, metrics: dict[str, Any]) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for metric, value in metrics.items():
        if isinstance(value, float):
            table.add_row(metric, _fmt(value))
    console.print(table)


_STYLE = {
    "pass": "[green]pass[/]",
    "fail": "[bold red]FAIL[/]",
    "inconclusive": "[yellow]inconclusive[/]",
    "skip": "[dim]skip[/]",
}


def print_report(report: dict[str, Any]) -> None:
    """One row per check of every audit, then where the report files are."""
    table = Table(title=f"audits · overall {report['status'].upper()}")
    for column in ("audit", "check", "value", "interval", "n", "threshold", "status"):
        table.add_column(column, justify="right" if column in ("value", "interval", "n", "threshold") else "left")
    for audit in report["audits"]:
        for item in audit["checks"]:
            bound = ("≤ " if item["direction"] == "max" else "≥ ") + _fmt(item["threshold"])
            interval = f"[{item['interval'][0]:.3f}, {item['interval'][1]:.3f}]" if item.get("interval") else ""
            table.add_row(
                audit["name"],
                item["name"],
                _fmt(item["value"]) if item["value"] is not None else "n/a",
                interval,
                "" if item.get("n") is None else str(item["n"]),
                bound,
                _STYLE[item["status"]],
            )
    console.print(table)
    for audit in report["audits"]:
        for warning in audit["warnings"]:
            console.print(f"[dim]{audit['name']}: {warning}[/]")
    _print_attribution(report.get("attribution"))
    console.print(f"report: {report['run']['path']}/report/report.md")


def _print_attribution(section: Optional[dict[str, Any]]) -> None:
    """Per check: P (foundation model, head trained) and F (the audited model), Δ with its interval, the verdict."""
    if not section:
        return
    if section.get("skipped"):
        console.print(f"where each finding comes from: not measured: {section['skipped']}", markup=False)
        return
    table = Table(title=f"where each finding comes from ({section['claim']})")
    for column in ("check", "P", "F", "Δ", "interval", "p (Holm)", "verdict"):
        table.add_column(column, justify="left" if column in ("check", "verdict") else "right")
    for row in section["checks"]:
        table.add_row(
            row["check"],
            _fmt(row["reference"]),
            _fmt(row["candidate"]),
            f"{row['difference']:+.4f}",
            f"[{row['interval'][0]:+.3f}, {row['interval'][1]:+.3f}]",
            f"{row['adjusted_p']:.2g}",
            row["verdict"],
        )
    console.print(table)


def print_comparison(rows: list[dict[str, Any]], objectives: list[str], left_out: Sequence[str] = ()) -> None:
    """One row per run; a star marks the Pareto front over the shared objectives; below, the runs left out and why."""
    # metrics and objectives; every audit check is in the CSV and HTML
    shown = [c for c in (rows[0] if rows else {}) if c not in ("run", "pareto_front") and "." not in c]
    table = Table(
        title=f"{len(rows)} runs · Pareto front (★) over {', '.join(objectives) or 'no shared objective'}",
        caption=f"left out, not complete: {'; '.join(left_out)}" if left_out else None,
    )
    table.add_column("run")
    table.add_column("★")
    for column in shown:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            "/".join(row["run"].split("/")[-2:]),
            "★" if row["pareto_front"] else "",
            *[_fmt(row.get(c)) if row.get(c) is not None else "" for c in shown],
        )
    stdout_console().print(table)


def stdout_console() -> Console:
    """rich's console; without a terminal (CI logs, pipes) wide enough that no name or message is cut or wrapped."""
    return Console() if sys.stdout.isatty() else Console(width=_LOG_WIDTH)


def print_sweep(rows: Sequence[Any], sweep_dir: Path) -> None:
    """One row per sweep job: its overrides, how it ended and why, where its run is."""
    table = Table(title=f"sweep {sweep_dir}: {sum(r.state == 'complete' for r in rows)} of {len(rows)} jobs complete")
    for column in ("job", "overrides", "state", "error", "run directory"):
        table.add_column(column, overflow="fold")
    for row in rows:
        style = "green" if row.state == "complete" else "red"
        # overrides and errors are the user's text: `audit=[bias]` is no rich markup
        table.add_row(row.job, escape(row.overrides), f"[{style}]{row.state}[/]", escape(row.error), row.run_dir)
    stdout_console().print(table)
    stdout_console().print(f"job table: {sweep_dir / 'sweep.md'}")


def print_probes(rows: list[dict[str, Any]]) -> None:
    """One row per probe; below the table, what to do about each one that cannot be read."""
    table = Table(title="audit probes")
    for column in ("probe", "status", "licence", "location"):
        table.add_column(column, overflow="fold")
    for row in rows:
        status = "[red]not ready[/red]" if row["problem"] else "[green]ready[/green]"
        table.add_row(f"{row['probe']}\n[dim]{row['description']}[/dim]", status, row["licence"], row["location"])
    console = stdout_console()
    console.print(table)
    for row in rows:
        if row["problem"]:
            console.print(row["problem"], markup=False)


def print_gate(parent, child, judged) -> None:
    """Every figure the gate judged, with the rule that judged it (a paired test on shared items, or the
    tolerance), regressions first."""
    regressions = [j for j in judged if j.regression]
    verdict = "regresses on" if regressions else "does not regress on"
    table = Table(title=f"gate: {child} {verdict} {parent}")
    for column in ("figure", "parent", "child", "rule", "why", "regression"):
        table.add_column(column, overflow="fold")
    for j in sorted(judged, key=lambda j: not j.regression):
        table.add_row(
            j.figure, _fmt(j.parent), _fmt(j.child), j.rule, escape(j.reason), "[red]yes[/]" if j.regression else "no"
        )
    stdout_console().print(table)
