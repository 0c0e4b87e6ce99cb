"""Comparing finished runs: one row per run, the Pareto front over quality, fairness, robustness and privacy,
and the gate a team runs before replacing a deployed model with a re-fine-tuned one.

A run's figures come from its results.json (validation metrics after training) and report/report.json (every
audit check's value, threshold and direction). The four objectives of the front, each where every run has it:

- quality: the task's headline validation metric (f1, accuracy; a masked LM's held-out loss, negated so that
  higher is better here too);
- fairness: the worst fairness or bias check as a share of its threshold (a gap of 0.05 under a 0.1 limit is
  0.5; lower is better);
- robustness: the lowest pass rate of the robustness tests (higher is better);
- privacy: the highest membership-inference AUC (lower is better).

A run is on the front when no other run is at least as good in every objective and better in one.

A language model's loss and perplexity are per token: runs whose tokenizers differ split the same text into a
different number of tokens (a 300-token vocabulary predicts easier tokens than a 50,000-token one), so those figures
are compared only between runs that share a tokenizer, and are left out, saying so, when they do not.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from fmtool.audit.paired import PairedDifference, harmful, paired_differences
from fmtool.errors import FmtoolError
from fmtool.runs import COMPLETE, RunDir, read_json
from fmtool.task import TASKS

# a task's headline validation metric, first found: NER, classification, masked LM (held-out loss)
QUALITY_METRICS = ("f1", "accuracy", "loss")
LOWER_IS_BETTER = ("loss", "perplexity")
# a language model's figures averaged over its own tokens
PER_TOKEN = ("loss", "perplexity")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt", "*.model")
# a difference equal to the tolerance passes whatever the float rounding (0.51 - 0.50 > 0.01 in binary)
_ROUNDING = 1e-9
# objective -> (higher is better)
OBJECTIVES = {"quality": True, "fairness": False, "robustness": True, "privacy": False}


def higher_is_better(figure: str) -> bool:
    """The direction of an objective or a validation metric (an audit check carries its own)."""
    if figure in OBJECTIVES:
        return OBJECTIVES[figure]
    return figure not in LOWER_IS_BETTER


@dataclass
class RunSummary:
    path: Path
    task: str
    metrics: dict[str, float]
    checks: dict[str, dict[str, Any]]  # "family.check" -> the check's record
    objectives: dict[str, Optional[float]] = field(default_factory=dict)
    on_front: bool = False
    tokenizer: Optional[str] = None  # digest of the saved tokenizer's files: runs with the same one share tokens
    items: dict[str, dict[str, list]] = field(default_factory=dict)  # "family.check" -> its per-item outcomes

    def figure(self, column: str) -> Optional[float]:
        if column in self.metrics:
            return self.metrics[column]
        if column in self.objectives:
            return self.objectives[column]
        check = self.checks.get(column)
        return None if check is None else check.get("value")


def run_dirs(paths: Sequence[Path]) -> tuple[list[Path], list[str]]:
    """The run directories named, a sweep folder standing for its complete runs (Hydra's multirun layout); and,
    for each run of a sweep left out, why (a sweep's failed or interrupted job must not hide the others)."""
    found: list[Path] = []
    left_out: list[str] = []
    for path in paths:
        if RunDir(path).is_run():
            found.append(path)
            continue
        inside = sorted((p.parent for p in path.rglob(RunDir(path).status_file.name)), key=str) if path.is_dir() else []
        # a sweep job refused before its run began has only its job record
        refused = (
            sorted((p.parent for p in path.rglob(RunDir(path).job_file.name) if not RunDir(p.parent).is_run()), key=str)
            if path.is_dir()
            else []
        )
        if not inside and not refused:
            raise FmtoolError(f"compare: {path} is neither a run directory nor a folder of runs (no status.json)")
        states = {run: RunDir(run).status().get("state") for run in inside}
        states.update({job: f"refused ({read_json(RunDir(job).job_file).get('error')})" for job in refused})
        complete = [run for run in inside if states[run] == COMPLETE]
        if not complete:
            raise FmtoolError(
                f"compare: {path} holds no complete run "
                f"({', '.join(f'{run.name}: {state}' for run, state in states.items())})"
            )
        found += complete
        left_out += [
            f"{run}: {state}"
            for run, state in sorted(states.items(), key=lambda item: str(item[0]))
            if state != COMPLETE
        ]
    return found, left_out


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FmtoolError(f"compare: {path} missing; is the run complete and audited?")
    return read_json(path)


def summarise(path: Path) -> RunSummary:
    results = _read(RunDir(path).results_file)
    report = _read(RunDir(path).report_json)
    validation = results.get("after", {}).get("validation", {})
    metrics = {k: float(v) for k, v in validation.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    checks = {
        f"{audit['name']}.{check['name']}": check
        for audit in report.get("audits", [])
        for check in audit.get("checks", [])
    }
    summary = RunSummary(
        path=path,
        task=results.get("task", report["run"]["task"]),
        metrics=metrics,
        checks=checks,
        tokenizer=_tokenizer_digest(RunDir(path).model_dir),
        items=saved_items(RunDir(path), report.get("audits", [])),
    )
    summary.objectives = objectives(summary)
    return summary


def saved_items(run: RunDir, audits: Sequence[dict[str, Any]]) -> dict[str, dict[str, list]]:
    """Every check's per-item outcomes that the run's audit kept ("family.check" -> ids, values, groups)."""
    kept = {}
    for audit in audits:
        path = run.audit_items_file(audit["name"])
        if path.is_file():
            kept.update({f"{audit['name']}.{check}": items for check, items in read_json(path).items()})
    return kept


def _tokenizer_digest(model_dir: Path) -> Optional[str]:
    files = sorted(p for pattern in _TOKENIZER_FILES for p in model_dir.glob(pattern) if p.is_file())
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def per_token_figures(runs: Sequence[RunSummary]) -> Optional[str]:
    """Leave a language model's per-token figures out of the comparison when the runs' tokenizers differ, saying
    why (None when they share one, or are no language models)."""
    if not any(r.task in TASKS and TASKS.get(r.task).language_model for r in runs):
        return None
    tokenizers = {r.tokenizer for r in runs}
    if len(tokenizers) < 2:
        return None
    for run in runs:
        run.metrics = {k: v for k, v in run.metrics.items() if k not in PER_TOKEN}
        run.objectives = objectives(run)
    kinds = "; ".join(f"{r.path.name}: {r.tokenizer or 'none saved'}" for r in runs)
    return (
        f"{' and '.join(PER_TOKEN)} are per token and these runs' tokenizers differ ({kinds}): left out; compare "
        "runs that share a tokenizer on them"
    )


def one_task(runs: Sequence[RunSummary]) -> None:
    """Runs of different tasks share no quality figure (entity F1 is not accuracy): they are never ranked together."""
    tasks: dict[str, list[str]] = {}
    for run in runs:
        tasks.setdefault(run.task, []).append(run.path.name)
    if len(tasks) > 1:
        kinds = "; ".join(f"{task}: {', '.join(names)}" for task, names in tasks.items())
        raise FmtoolError(
            f"compare: the runs are of different tasks ({kinds}); their quality figures do not compare: compare "
            "each task's runs apart"
        )


def _relative(check: dict[str, Any]) -> Optional[float]:
    value, threshold = check.get("value"), check.get("threshold")
    if value is None or not threshold:
        return None
    return value / threshold if check.get("direction") == "max" else threshold / max(value, 1e-12)


def objectives(run: RunSummary) -> dict[str, Optional[float]]:
    headline = next((m for m in QUALITY_METRICS if m in run.metrics), None)
    quality = (
        None if headline is None else run.metrics[headline] if higher_is_better(headline) else -run.metrics[headline]
    )
    fairness = [
        _relative(c)
        for name, c in run.checks.items()
        if name.split(".")[0] in ("fairness", "bias") and _relative(c) is not None
    ]
    robustness = [
        c["value"] for name, c in run.checks.items() if name.startswith("robustness.") and c.get("value") is not None
    ]
    privacy = [
        c["value"]
        for name, c in run.checks.items()
        if name.startswith("membership.") and name.endswith(".auc") and c.get("value") is not None
    ]
    return {
        "quality": quality,
        "fairness": max(fairness) if fairness else None,
        "robustness": min(robustness) if robustness else None,
        "privacy": max(privacy) if privacy else None,
    }


def pareto_front(runs: Sequence[RunSummary]) -> list[str]:
    """Marks each run's on_front; returns the objectives used (those every run has)."""
    used = [name for name in OBJECTIVES if runs and all(r.objectives.get(name) is not None for r in runs)]

    def score(run: RunSummary) -> list[float]:
        return [run.objectives[name] if OBJECTIVES[name] else -run.objectives[name] for name in used]

    for run in runs:
        mine = score(run)
        run.on_front = bool(used) and not any(
            all(o >= m for o, m in zip(score(other), mine)) and any(o > m for o, m in zip(score(other), mine))
            for other in runs
            if other is not run
        )
    return used


def columns_of(runs: Sequence[RunSummary]) -> list[str]:
    metrics = list(dict.fromkeys(m for r in runs for m in r.metrics))
    checks = list(dict.fromkeys(c for r in runs for c in r.checks))
    return [*metrics, *[o for o in OBJECTIVES if any(r.objectives.get(o) is not None for r in runs)], *checks]


def sort_runs(runs: list[RunSummary], by: Optional[str]) -> list[RunSummary]:
    key = by or next((m for m in QUALITY_METRICS if all(m in r.metrics for r in runs)), None)
    if key is None:
        return runs
    if not any(r.figure(key) is not None for r in runs):
        raise FmtoolError(f"compare: --sort {key}: no run has that figure; choose from: {', '.join(columns_of(runs))}")
    direction = next((r.checks[key].get("direction") for r in runs if key in r.checks), None)
    descending = direction == "min" if direction else higher_is_better(key)
    present = [r for r in runs if r.figure(key) is not None]
    return sorted(present, key=lambda r: r.figure(key), reverse=descending) + [r for r in runs if r.figure(key) is None]


def rows(runs: Sequence[RunSummary]) -> list[dict[str, Any]]:
    columns = columns_of(runs)
    return [{"run": str(r.path), "pareto_front": r.on_front, **{c: r.figure(c) for c in columns}} for r in runs]


def to_csv(table: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(table[0]) if table else ["run"])
    writer.writeheader()
    writer.writerows(table)
    return buffer.getvalue()


def to_markdown(table: Sequence[dict[str, Any]]) -> str:
    from fmtool.report.report import markdown_table

    return "\n".join(markdown_table(table)) + "\n"


@dataclass(frozen=True)
class Judgement:
    """How the gate judged one figure: by the paired test on the item outcomes both runs kept, or by the tolerance
    where they share none."""

    figure: str
    parent: Optional[float]
    child: Optional[float]
    rule: str  # "paired" or "tolerance"
    reason: str
    regression: bool
    paired: Optional[PairedDifference] = None


# the gate's significance level, for Holm-adjusted p-values
GATE_ALPHA = 0.05


def judge(
    parent: RunSummary,
    child: RunSummary,
    *,
    metric_tolerance: float,
    check_tolerance: float,
    margin: float,
    seed: int = 0,
) -> list[Judgement]:
    """Every figure both runs have, judged. An audit check whose item outcomes both runs kept on shared items is
    a regression when the child's difference is harmful, its Holm-adjusted p-value (over the paired checks) is
    below GATE_ALPHA, its interval excludes 0 and it exceeds `margin`. Other figures fall back to the tolerances:
    a validation metric lower by more than metric_tolerance (higher for loss and perplexity), an audit figure worse
    by more than check_tolerance in its check's direction, or a check that passed and now fails."""
    judged = []
    for name, before in parent.metrics.items():
        after = child.metrics.get(name)
        if after is None or name in ("token_accuracy",):
            continue
        worse = (before - after) if higher_is_better(name) else (after - before)
        regression = worse > metric_tolerance + _ROUNDING
        judged.append(
            Judgement(
                name, before, after, "tolerance", f"{worse:+.4f} worse (tolerance {metric_tolerance})", regression
            )
        )
    paired = paired_differences(
        {
            name: ([parent.items[name]], [child.items[name]])
            for name in parent.checks
            if name in child.checks and name in parent.items and name in child.items
        },
        seed=seed,
    )
    for name, before in parent.checks.items():
        after = child.checks.get(name)
        if after is None or before.get("value") is None or after.get("value") is None:
            continue
        if name in paired:
            found = paired[name]
            low, high = found.interval
            regression = (
                harmful(found.difference, before.get("direction", "max"))
                and found.significant(GATE_ALPHA)
                and abs(found.difference) > margin + _ROUNDING
            )
            reason = (
                f"Δ {found.difference:+.4f} [{low:+.4f}, {high:+.4f}] on {found.n} shared items, "
                f"{found.test} p={found.p_value:.3g} (Holm {found.adjusted_p:.3g}), margin {margin}"
            )
            judged.append(Judgement(name, before["value"], after["value"], "paired", reason, regression, found))
            continue
        worse = (
            (after["value"] - before["value"])
            if before.get("direction") == "max"
            else (before["value"] - after["value"])
        )
        if before.get("status") == "pass" and after.get("status") == "fail":
            reason, regression = "passed for the parent, fails for the child", True
        else:
            reason, regression = (
                f"{worse:+.4f} worse (tolerance {check_tolerance})",
                worse > check_tolerance + _ROUNDING,
            )
        judged.append(Judgement(name, before["value"], after["value"], "tolerance", reason, regression))
    return judged


def html_page(table: Sequence[dict[str, Any]], used: Sequence[str], runs: Sequence[RunSummary]) -> str:
    """A self-contained page: the table and, with two objectives or more, quality against each other one."""
    import html

    from markdown_it import MarkdownIt

    from fmtool.report.plots import pareto_scatter
    from fmtool.report.report import PAGE_STYLE

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(to_markdown(table))
    figures = "".join(
        f'<figure class="plot" data-plot="pareto">{svg}<figcaption>{html.escape(caption)}</figcaption></figure>'
        for caption, svg in pareto_scatter(runs, used)
    )
    front = ", ".join(html.escape(str(r.path)) for r in runs if r.on_front) or "none"
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>fmtool "
        f"compare</title><style>{PAGE_STYLE}</style></head><body>"
        f"<h1>fmtool compare: {len(runs)} runs</h1><p>Pareto front over "
        f"{html.escape(', '.join(used) or 'no shared objective')}: {front}</p>"
        f"{figures}{body}</body></html>\n"
    )
