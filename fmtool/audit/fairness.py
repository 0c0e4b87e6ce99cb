"""Group fairness: do the model's outcomes and errors differ between demographic groups?

Classification: per group of each sensitive feature (columns of an evaluation file, e.g. EEC's Gender
and Race, or metadata columns of the run's validation split), fairlearn's MetricFrame gives accuracy,
F1, selection rate and false positive / negative rates, with bootstrap confidence intervals; the
checks are demographic parity difference and ratio (four-fifths rule), equalized odds difference and
the accuracy gap. Binary outcomes are one-vs-rest for `positive_label`.

NER: after Mishra et al. (2020), template sentences are filled with first names from demographic
groups (gender x origin); the checks are the gap and ratio of person-entity recall between groups,
with per-group entity F1 reported.

Citations: Bird et al. 2020, "Fairlearn: A toolkit for assessing and improving fairness in AI";
Mishra, He & Belli 2020, "Assessing Demographic Bias in Named Entity Recognition".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame, equalized_odds_difference, false_negative_rate, false_positive_rate, selection_rate
from sklearn.metrics import accuracy_score, f1_score

from fmtool.audit.base import AuditContext, AuditResult, check, register
from fmtool.dataset.lexicons import first_names, ner_templates
from fmtool.dataset.examples import TextExample, TokenExample
from fmtool.dataset.readers import read_rows
from fmtool.errors import FmtoolError
from fmtool.task.ner import entity_report

_KEY = "audit.fairness"


@dataclass
class FairnessConfig:
    # evaluation file with sensitive columns; null: the run's validation split and its metadata columns
    data: Optional[str] = None
    format: str = "csv"
    text_column: str = "text"
    label_column: Optional[str] = None
    label_map: Dict[str, str] = field(default_factory=dict)
    sensitive_columns: List[str] = field(default_factory=list)
    positive_label: Optional[str] = None
    max_examples: Optional[int] = None
    n_boot: int = 200
    confidence: float = 0.95
    person_type: str = "PER"
    first_names: Optional[str] = None
    templates: Optional[str] = None
    max_demographic_parity_difference: float = 0.1
    min_demographic_parity_ratio: float = 0.8
    max_equalized_odds_difference: float = 0.1
    max_accuracy_difference: float = 0.1
    max_recall_difference: float = 0.1
    min_recall_ratio: float = 0.8


def _quantiles(confidence: float) -> list[float]:
    tail = (1 - confidence) / 2
    return [tail, 0.5, 1 - tail]


def _metric_frame(metrics: dict, y_true, y_pred, groups: pd.Series, cfg: FairnessConfig, seed: int) -> MetricFrame:
    boot = {"n_boot": cfg.n_boot, "ci_quantiles": _quantiles(cfg.confidence), "random_state": seed} if cfg.n_boot else {}
    return MetricFrame(metrics=metrics, y_true=y_true, y_pred=y_pred, sensitive_features=groups, **boot)


def _group_rows(feature: str, frame: MetricFrame) -> list[dict[str, Any]]:
    rows = []
    by_group = frame.by_group
    intervals = frame.by_group_ci if frame.n_boot else None
    for group, values in by_group.iterrows():
        row = {"feature": feature, "group": str(group), **{k: float(v) for k, v in values.items()}}
        if intervals is not None:
            for metric in by_group.columns:
                row[f"{metric}_ci"] = [float(intervals[0].loc[group, metric]), float(intervals[2].loc[group, metric])]
        rows.append(row)
    return rows


def _gap_row(feature: str, metric: str, frame: MetricFrame) -> dict[str, Any]:
    row = {"feature": feature, "metric": metric, "difference": float(frame.difference()[metric]), "ratio": float(frame.ratio()[metric])}
    if frame.n_boot:
        low, _, high = frame.difference_ci()
        low_r, _, high_r = frame.ratio_ci()
        row.update(difference_ci=[float(low[metric]), float(high[metric])], ratio_ci=[float(low_r[metric]), float(high_r[metric])])
    return row


def _load_rows(ctx: AuditContext, cfg: FairnessConfig) -> tuple[list[TextExample], pd.DataFrame, list[str]]:
    warnings = []
    if cfg.data is None:
        examples = ctx.load_split("validation")
        table = pd.DataFrame([e.meta for e in examples])
    else:
        path = Path(cfg.data)
        if not path.is_file():
            raise FmtoolError(f"{_KEY}.data: {path} not found")
        rows = [row for _, row in read_rows(path, cfg.format)]
        for column in [cfg.text_column, cfg.label_column, *cfg.sensitive_columns]:
            if column is not None and rows and column not in rows[0]:
                raise FmtoolError(f"{path}: column '{column}' not found; columns are: {', '.join(rows[0])}")
        labels = [None if cfg.label_column is None else str(r[cfg.label_column]) for r in rows]
        if cfg.label_map:
            keep = [i for i, label in enumerate(labels) if label in cfg.label_map]
            if len(keep) < len(rows):
                warnings.append(f"{len(rows) - len(keep)} rows whose {cfg.label_column} is not in label_map were left out")
            rows, labels = [rows[i] for i in keep], [cfg.label_map[labels[i]] for i in keep]
        examples = [TextExample(id=str(i), text=str(r[cfg.text_column]), label=label or "", meta=r) for i, (r, label) in enumerate(zip(rows, labels))]
        table = pd.DataFrame(rows)
    if cfg.max_examples:
        examples, table = examples[: cfg.max_examples], table.iloc[: cfg.max_examples]
    return examples, table, warnings


def _classification(ctx: AuditContext, cfg: FairnessConfig) -> AuditResult:
    examples, table, warnings = _load_rows(ctx, cfg)
    columns = cfg.sensitive_columns or [c for c in table.columns if c not in (cfg.text_column, cfg.label_column)]
    if not examples or not columns:
        return AuditResult("fairness", 1, {}, [check("sensitive_features", None, max_value=0)], warnings=warnings + ["no sensitive features: set audit.fairness.data and audit.fairness.sensitive_columns"])
    has_truth = cfg.data is None or cfg.label_column is not None
    unknown = sorted({e.label for e in examples} - set(ctx.labels)) if has_truth else []
    if unknown:
        raise FmtoolError(f"{_KEY}: labels {', '.join(unknown)} are not model labels ({', '.join(ctx.labels)}); map them with {_KEY}.label_map")
    positive = cfg.positive_label or (ctx.labels[-1] if len(ctx.labels) == 2 else None)
    if positive is None:
        raise FmtoolError(f"{_KEY}.positive_label must name one of {', '.join(ctx.labels)} for a multiclass model")
    predicted = np.array([p.label == positive for p in ctx.predict(examples)], dtype=int)
    truth = np.array([e.label == positive for e in examples], dtype=int)
    metrics: dict[str, Any] = {"selection_rate": selection_rate, "count": lambda t, p: float(len(t))}
    if has_truth:
        metrics.update(accuracy=accuracy_score, f1=lambda t, p: f1_score(t, p, zero_division=0), false_positive_rate=false_positive_rate, false_negative_rate=false_negative_rate)
    summary, checks, groups_table, gaps = {}, [], [], []
    for column in columns:
        groups = table[column].astype(str).str.strip()
        mask = (groups != "") & (groups.str.lower() != "nan") & table[column].notna()
        if groups[mask].nunique() < 2:
            warnings.append(f"sensitive column '{column}' has fewer than two groups; skipped")
            continue
        frame = _metric_frame(metrics, truth[mask.values], predicted[mask.values], groups[mask].reset_index(drop=True), cfg, ctx.seed)
        groups_table += _group_rows(column, frame)
        gaps += [_gap_row(column, m, frame) for m in metrics if m != "count"]
        dp_diff, dp_ratio = float(frame.difference()["selection_rate"]), float(frame.ratio()["selection_rate"])
        summary.update({f"{column}.demographic_parity_difference": dp_diff, f"{column}.demographic_parity_ratio": dp_ratio})
        checks += [
            check(f"{column}.demographic_parity_difference", dp_diff, max_value=cfg.max_demographic_parity_difference, description="largest gap in positive-prediction rate"),
            check(f"{column}.demographic_parity_ratio", dp_ratio, min_value=cfg.min_demographic_parity_ratio, description="smallest / largest positive-prediction rate"),
        ]
        if has_truth:
            eo = float(equalized_odds_difference(truth[mask.values], predicted[mask.values], sensitive_features=groups[mask].values))
            accuracy_gap = float(frame.difference()["accuracy"])
            summary.update({f"{column}.equalized_odds_difference": eo, f"{column}.accuracy_difference": accuracy_gap})
            checks += [
                check(f"{column}.equalized_odds_difference", eo, max_value=cfg.max_equalized_odds_difference, description="largest gap in true or false positive rate"),
                check(f"{column}.accuracy_difference", accuracy_gap, max_value=cfg.max_accuracy_difference, description="largest gap in accuracy"),
            ]
    return AuditResult("fairness", 1, summary, checks, {"groups": groups_table, "gaps": gaps}, warnings + [f"positive label: {positive}"])


def _ner_probe(cfg: FairnessConfig) -> tuple[list[TokenExample], pd.DataFrame]:
    examples, rows = [], []
    for template in ner_templates(cfg.templates, f"{_KEY}.templates"):
        words = template.split()
        slot = words.index("{name}")
        for gender, origins in first_names(cfg.first_names, f"{_KEY}.first_names").items():
            for origin, names in origins.items():
                for name in names:
                    tokens = words[:slot] + [name] + words[slot + 1 :]
                    tags = ["O"] * len(tokens)
                    tags[slot] = f"B-{cfg.person_type}"
                    examples.append(TokenExample(id=f"{len(examples)}", tokens=tokens, tags=tags))
                    rows.append({"gender": gender, "origin": origin, "slot": slot})
    return examples, pd.DataFrame(rows)


def _ner(ctx: AuditContext, cfg: FairnessConfig) -> AuditResult:
    if f"B-{cfg.person_type}" not in ctx.labels:
        return AuditResult("fairness", 1, {}, [check("recall_difference", None, max_value=cfg.max_recall_difference)], warnings=[f"the model has no B-{cfg.person_type} label; set {_KEY}.person_type"])
    examples, table = _ner_probe(cfg)
    predictions = ctx.predict(examples)
    found = np.array([
        p.tags[slot] == f"B-{cfg.person_type}" and (slot + 1 == len(p.tags) or p.tags[slot + 1] != f"I-{cfg.person_type}")
        for p, slot in zip(predictions, table["slot"])
    ], dtype=int)
    summary, checks, groups_table, gaps = {}, [], [], []
    for feature in ("gender", "origin"):
        frame = _metric_frame({"recall": lambda t, p: float(np.mean(p)), "count": lambda t, p: float(len(t))}, np.ones_like(found), found, table[feature], cfg, ctx.seed)
        rows = _group_rows(feature, frame)
        for row in rows:
            members = (table[feature] == row["group"]).values
            report = entity_report([e.tags for e, m in zip(examples, members) if m], [p.tags for p, m in zip(predictions, members) if m])
            row["f1"] = report["micro"]["f1"]
        groups_table += rows
        gaps.append(_gap_row(feature, "recall", frame))
        difference, ratio = float(frame.difference()["recall"]), float(frame.ratio()["recall"])
        summary.update({f"{feature}.recall_difference": difference, f"{feature}.recall_ratio": ratio})
        checks += [
            check(f"{feature}.recall_difference", difference, max_value=cfg.max_recall_difference, description="largest gap in person-name recall"),
            check(f"{feature}.recall_ratio", ratio, min_value=cfg.min_recall_ratio, description="lowest / highest person-name recall"),
        ]
    summary["recall"] = float(found.mean())
    return AuditResult("fairness", 1, summary, checks, {"groups": groups_table, "gaps": gaps}, [f"{len(examples)} template sentences"])


@register("fairness", version=1, config_type=FairnessConfig, description="group fairness of outcomes and errors (fairlearn MetricFrame)")
def run(ctx: AuditContext, cfg: FairnessConfig) -> AuditResult:
    return _ner(ctx, cfg) if ctx.task == "ner" else _classification(ctx, cfg)
