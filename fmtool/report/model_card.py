"""A model card for each audited run (Mitchell et al. 2019, "Model Cards for Model Reporting"), in the layout of
the Hugging Face hub: a YAML metadata block, then details, intended use, training data and procedure, evaluation,
the audit findings as bias, risks and limitations, and the compute it took. Saved as report/model_card.md and as
model/README.md, so the card travels with the model directory when it is shared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fmtool.audit.base import FAIL, INCONCLUSIVE
from fmtool.task import TASKS


def _base(model: str) -> str:
    """A hub id as it is; a local path by its folder name (the card must not leak paths of the training machine)."""
    return model if model.count("/") <= 1 and not model.startswith((".", "/")) else Path(model).name


def _metrics_table(report: dict[str, Any]) -> list[str]:
    after = report["metrics"].get("after", {})
    lines = ["| split | metric | before fine-tuning | after |", "|---|---|---|---|"]
    for split, values in after.items():
        before = report["metrics"].get("before", {}).get(split, {})
        lines += [
            f"| {split} | {name} | {before.get(name, float('nan')):.4f} | {value:.4f} |"
            for name, value in values.items()
            if isinstance(value, float)
        ]
    return lines if len(lines) > 2 else ["No evaluation metrics were recorded."]


def _findings(report: dict[str, Any]) -> list[str]:
    lines = []
    for audit in report["audits"]:
        unsettled = [c for c in audit["checks"] if c["status"] in (FAIL, INCONCLUSIVE)]
        note = {"pass": " (every check within its threshold)", "skip": " (not measured: see the report)"}.get(
            audit["status"], ""
        )
        lines.append(f"- **{audit['name']}**: {audit['status']}{note}")
        for check in unsettled:
            value = "n/a" if check["value"] is None else f"{check['value']:.4g}"
            bound = "≤" if check["direction"] == "max" else "≥"
            lines.append(
                f"  - {check['status']}: `{check['name']}` = {value} (threshold {bound} "
                f"{check['threshold']:g}){': ' + check['description'] if check.get('description') else ''}"
            )
    return lines or ["- No audit ran on this model: its bias, privacy and robustness are unmeasured."]


def model_card(report: dict[str, Any], results: dict[str, Any], environment: dict[str, Any]) -> str:
    run, task = report["run"], report["run"]["task"]
    train = results.get("train", {})
    config = report.get("config", {})
    trainer, optimizer = config.get("trainer", {}), config.get("optimizer", {})
    labels = results.get("labels", [])
    privacy = report.get("privacy")
    data = results.get("data", {})
    header = (
        [
            "---",
            "library_name: transformers",
            f"pipeline_tag: {TASKS.get(task).pipeline_tag}",
            f"base_model: {_base(run['model'])}",
            "tags:",
            "- fmtool",
            f"- {task}",
        ]
        + (["datasets:", f"- {run['dataset']}"] if run.get("dataset") else [])
        + ["---", ""]
    )
    body = [
        f"# {task} model fine-tuned from {_base(run['model'])} with fmtool",
        "",
        "## Model details",
        "",
        f"- Base model: `{_base(run['model'])}`; task: {task}" + (f"; labels: {', '.join(labels)}" if labels else ""),
        f"- Trained by fmtool {report['fmtool_version']} (git commit "
        f"{environment.get('git_commit') or 'unknown'}), seed {environment.get('seed', 'unknown')}",
        f"- Overall audit status: **{report['status']}** (see Bias, risks and limitations)",
        "",
        "## Intended use",
        "",
        f"For {TASKS.get(task).intended_use}. Out of scope: decisions about people without human review, and text "
        "unlike the training data (other languages, domains or label sets), where the evaluation below says nothing.",
        "",
        "## Training data",
        "",
        f"Dataset `{run.get('dataset') or 'unknown'}`: "
        + ", ".join(
            f"{split} {figures.get('examples', figures.get('documents', '?'))} examples"
            for split, figures in data.items()
            if isinstance(figures, dict)
        )
        + ".",
    ]
    if results.get("redacted"):
        body.append(
            "Personal data was redacted before training (dataset.redact_pii): "
            + "; ".join(
                f"{split}: " + ", ".join(f"{n} {kind}" for kind, n in counts.items())
                for split, counts in results["redacted"].items()
                if counts
            )
            + "."
        )
    body += [
        "",
        "## Training procedure",
        "",
        f"- {train.get('updates', '?')} updates over {train.get('epochs_started', '?')} epoch(s), batch size "
        f"{trainer.get('batch_size', '?')}, "
        f"{optimizer.get('name', '?')} at learning rate {optimizer.get('lr', '?')}, precision "
        f"{trainer.get('precision', '?')}, "
        f"adversarial training: {train.get('adversarial', 'none')}",
    ]
    if privacy:
        body.append(
            f"- Differentially private (DP-SGD, Opacus): epsilon {privacy['epsilon']:.2f} at delta "
            f"{privacy['delta']:g}, "
            f"noise multiplier {privacy['noise_multiplier']:.3f}, per-example clipping norm {privacy['max_grad_norm']}"
        )
    body += [
        "",
        "## Evaluation results",
        "",
        *_metrics_table(report),
        "",
        "## Bias, risks and limitations",
        "",
        "Measured by fmtool's audits on this model (thresholds in the run's config; the full evidence is in "
        "report/report.html):",
        "",
        *_findings(report),
        "",
        "## Compute",
        "",
        f"- Training time {train.get('seconds', '?')} s ({train.get('samples_per_second', '?')} samples/s) on "
        f"{environment.get('device', 'unknown device')}, "
        f"{train.get('processes', 1)} process(es); {environment.get('platform', '')}",
        "- Packages: " + ", ".join(f"{k} {v}" for k, v in environment.get("packages", {}).items()),
        "",
        "## How to use",
        "",
        "```bash",
        'fmtool predict RUN_DIR "your text"',
        'fmtool explain RUN_DIR "your text"',
        "```",
        "",
    ]
    return "\n".join(header + body)
