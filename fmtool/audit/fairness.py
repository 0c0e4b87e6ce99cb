"""Group fairness: do the model's outcomes and errors differ between demographic groups?

Classification: per group of each sensitive feature (columns of an evaluation file, e.g. EEC's Gender
and Race, or metadata columns of the run's validation split), fairlearn's MetricFrame gives accuracy,
F1, selection rate and false positive / negative rates; the checks are demographic parity difference
and ratio (four-fifths rule), equalized odds difference and the accuracy gap. Binary outcomes are
one-vs-rest for `positive_label`.

NER: after Mishra et al. (2020), template sentences are filled with first names from demographic
groups (gender x origin); the checks are the gap and ratio of person-entity recall between groups,
with per-group entity F1 reported.

Every figure and check carries a percentile bootstrap interval (rows resampled with replacement, as
fairlearn's n_boot does) and a check is judged on it: fail when the interval lies beyond the
threshold, inconclusive when it straddles it. All the metrics are functions of a group's confusion
counts, so the resamples are drawn as count tables in one vectorised pass instead of fairlearn's
MetricFrame per resample (a pandas group-by each); the point estimates stay fairlearn's.

Citations: Bird et al. 2020, "Fairlearn: A toolkit for assessing and improving fairness in AI";
Mishra, He & Belli 2020, "Assessing Demographic Bias in Named Entity Recognition".
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import pandas as pd
from fairlearn.metrics import (
    MetricFrame,
    equalized_odds_difference,
    false_negative_rate,
    false_positive_rate,
    selection_rate,
)
from sklearn.metrics import accuracy_score, f1_score

from fmtool.audit.base import AuditContext, AuditResult, check, register
from fmtool.config.schema import ranged
from fmtool.dataset.examples import TextExample, TokenExample
from fmtool.dataset.lexicons import first_names, ner_templates
from fmtool.dataset.readers import read_rows
from fmtool.dataset.tags import PERSON_TYPES, person_type
from fmtool.errors import FmtoolError
from fmtool.task.ner import entity_report

_KEY = "audit.fairness"
# the roles a label_map may name instead of a model's labels (fairness_eec maps EEC's emotions to them)
_SENTIMENT_ROLES = ("positive", "negative")


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
    max_examples: Optional[int] = ranged(None, low=1)
    n_boot: int = ranged(200, low=0)
    confidence: float = ranged(0.95, low=0, high=1, low_open=True, high_open=True)
    person_type: Optional[str] = None  # NER: None finds the model's PER / PERSON type, in any case
    first_names: Optional[str] = None
    templates: Optional[str] = None
    max_demographic_parity_difference: float = ranged(0.1, low=0, high=1)
    min_demographic_parity_ratio: float = ranged(0.8, low=0, high=1)
    max_equalized_odds_difference: float = ranged(0.1, low=0, high=1)
    max_accuracy_difference: float = ranged(0.1, low=0, high=1)
    max_recall_difference: float = ranged(0.1, low=0, high=1)
    min_recall_ratio: float = ranged(0.8, low=0, high=1)


@dataclass(frozen=True)
class _Metric:
    """A group metric as fairlearn computes it from labels, and from the group's confusion counts for the bootstrap."""

    of_labels: Callable[[np.ndarray, np.ndarray], float]
    of_counts: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (tp, fp, fn, tn) -> value


def _share(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan)


_COUNT = _Metric(lambda t, p: float(len(t)), lambda tp, fp, fn, tn: (tp + fp + fn + tn).astype(float))
_CLASSIFICATION_METRICS = {
    "selection_rate": _Metric(selection_rate, lambda tp, fp, fn, tn: _share(tp + fp, tp + fp + fn + tn)),
    "count": _COUNT,
}
_WITH_TRUTH = {
    "accuracy": _Metric(accuracy_score, lambda tp, fp, fn, tn: _share(tp + tn, tp + fp + fn + tn)),
    "f1": _Metric(
        lambda t, p: f1_score(t, p, zero_division=0),
        lambda tp, fp, fn, tn: np.nan_to_num(_share(2 * tp, 2 * tp + fp + fn)),
    ),
    "false_positive_rate": _Metric(false_positive_rate, lambda tp, fp, fn, tn: _share(fp, fp + tn)),
    "false_negative_rate": _Metric(false_negative_rate, lambda tp, fp, fn, tn: _share(fn, fn + tp)),
}
# NER: every template's name is a person, so recall is the share found
_RECALL_METRICS = {
    "recall": _Metric(lambda t, p: float(np.mean(p)), lambda tp, fp, fn, tn: _share(tp, tp + fn)),
    "count": _COUNT,
}


@dataclass
class _Intervals:
    """Bootstrap percentile intervals: per group and metric, and of each metric's difference and ratio between
    groups."""

    by_group: dict[tuple[str, str], tuple[float, float]]
    difference: dict[str, tuple[float, float]]
    ratio: dict[str, tuple[float, float]]


def _resampled_counts(
    truth: np.ndarray, predicted: np.ndarray, codes: np.ndarray, n_groups: int, n_boot: int, seed: int
) -> np.ndarray:
    """(n_boot, n_groups, 4) confusion counts (tn, fp, fn, tp) per group, each resample n rows drawn with
    replacement."""
    rng = np.random.default_rng(seed)
    n, cells = len(truth), n_groups * 4
    key = codes * 4 + truth * 2 + predicted
    counts = np.empty((n_boot, cells))
    chunk = max(1, 2_000_000 // max(n, 1))  # resamples per pass: bounds the index matrix's memory
    for start in range(0, n_boot, chunk):
        rows = min(chunk, n_boot - start)
        keys = key[rng.integers(0, n, size=(rows, n))] + np.arange(rows)[:, None] * cells
        counts[start : start + rows] = np.bincount(keys.ravel(), minlength=rows * cells).reshape(rows, cells)
    return counts.reshape(n_boot, n_groups, 4)


def _bootstrap(
    metrics: dict[str, _Metric],
    truth: np.ndarray,
    predicted: np.ndarray,
    groups: np.ndarray,
    cfg: FairnessConfig,
    seed: int,
) -> _Intervals:
    names, codes = np.unique(groups, return_inverse=True)
    counts = _resampled_counts(truth.astype(int), predicted.astype(int), codes, len(names), cfg.n_boot, seed)
    tn, fp, fn, tp = (counts[..., k] for k in range(4))
    tail = (1 - cfg.confidence) / 2
    by_group, difference, ratio = {}, {}, {}

    def interval(values: np.ndarray) -> np.ndarray:
        return np.nanquantile(values, [tail, 1 - tail], axis=0)

    for metric, definition in metrics.items():
        values = definition.of_counts(tp, fp, fn, tn)  # (n_boot, n_groups)
        for name, (low, high) in zip(names, interval(values).T):
            by_group[(str(name), metric)] = (float(low), float(high))
        with np.errstate(all="ignore"):
            top, bottom = np.nanmax(values, axis=1), np.nanmin(values, axis=1)
            difference[metric] = tuple(map(float, interval(top - bottom)))
            ratio[metric] = tuple(map(float, interval(np.where(top > 0, bottom / np.where(top > 0, top, 1), np.nan))))
    if "false_positive_rate" in metrics:
        with np.errstate(all="ignore"):
            gaps = [np.nanmax(v, axis=1) - np.nanmin(v, axis=1) for v in (_share(fp, fp + tn), _share(tp, tp + fn))]
        difference["equalized_odds"] = tuple(map(float, interval(np.fmax(*gaps))))
    return _Intervals(by_group, difference, ratio)


def _metric_frame(metrics: dict[str, _Metric], y_true, y_pred, groups: pd.Series) -> MetricFrame:
    return MetricFrame(
        metrics={name: m.of_labels for name, m in metrics.items()},
        y_true=y_true,
        y_pred=y_pred,
        sensitive_features=groups,
    )


def _group_rows(feature: str, frame: MetricFrame, intervals: Optional[_Intervals]) -> list[dict[str, Any]]:
    rows = []
    for group, values in frame.by_group.iterrows():
        row = {"feature": feature, "group": str(group), **{k: float(v) for k, v in values.items()}}
        if intervals is not None:
            for metric in frame.by_group.columns:
                row[f"{metric}_ci"] = list(intervals.by_group[(str(group), metric)])
        rows.append(row)
    return rows


def _gap_row(feature: str, metric: str, frame: MetricFrame, intervals: Optional[_Intervals]) -> dict[str, Any]:
    row = {
        "feature": feature,
        "metric": metric,
        "difference": float(frame.difference()[metric]),
        "ratio": float(frame.ratio()[metric]),
    }
    if intervals is not None:
        row.update(difference_ci=list(intervals.difference[metric]), ratio_ci=list(intervals.ratio[metric]))
    return row


def _gap_checks(
    feature: str,
    metric: str,
    frame: MetricFrame,
    intervals: Optional[_Intervals],
    *,
    max_difference: float,
    min_ratio: Optional[float],
    name: str,
    what: str,
) -> list:
    """The difference check (and, given min_ratio, the ratio check) of one metric between the groups of a feature."""
    difference, ratio = float(frame.difference()[metric]), float(frame.ratio()[metric])
    checks = [
        check(
            f"{feature}.{name}_difference",
            difference,
            max_value=max_difference,
            description=f"largest gap in {what}",
            interval=None if intervals is None else intervals.difference[metric],
            n=int(frame.overall["count"]),
        )
    ]
    if min_ratio is not None:
        checks.append(
            check(
                f"{feature}.{name}_ratio",
                ratio,
                min_value=min_ratio,
                description=f"lowest / highest {what}",
                interval=None if intervals is None else intervals.ratio[metric],
                n=int(frame.overall["count"]),
            )
        )
    return checks


def _figures(checks: list) -> dict[str, float]:
    """The summary: each check's figure under the check's name (NaN where it could not be measured)."""
    return {c.name: float("nan") if c.value is None else c.value for c in checks}


def sentiment_labels(model_labels: Sequence[str]) -> Optional[dict[str, str]]:
    """A two-label model's label for each sentiment role (positive, negative), when its labels say which is which:
    names holding "pos" and "neg" (positive, POS, LABEL_POSITIVE...), or 0/1 and LABEL_0/LABEL_1, read as SST-2's
    negative/positive; None otherwise."""
    if len(model_labels) != 2:
        return None
    positive = [label for label in model_labels if "pos" in label.lower()]
    negative = [label for label in model_labels if "neg" in label.lower()]
    if len(positive) == 1 and len(negative) == 1 and positive != negative:
        return {"positive": positive[0], "negative": negative[0]}
    ordered = sorted(model_labels, key=str.lower)
    if [label.lower() for label in ordered] in (["0", "1"], ["label_0", "label_1"]):
        return {"negative": ordered[0], "positive": ordered[1]}
    return None


def _as_model_labels(ctx: AuditContext, examples: list[TextExample]) -> tuple[list[TextExample], list[str]]:
    """Examples whose labels are sentiment roles (fairness_eec's label_map) given the model's own labels for them,
    with a note of the mapping; other labels are left for the caller to check."""
    found = {e.label for e in examples}
    if not found or found <= set(ctx.labels) or not found <= set(_SENTIMENT_ROLES):
        return examples, []
    roles = sentiment_labels(ctx.labels)
    if roles is None:
        return examples, []
    mapped = [replace(e, label=roles[e.label]) for e in examples]
    note = ", ".join(f"{role} -> '{roles[role]}'" for role in _SENTIMENT_ROLES)
    return mapped, [f"label_map's sentiment roles taken as the model's labels: {note}"]


def _unknown_labels(ctx: AuditContext, examples: Sequence[TextExample]) -> Optional[str]:
    unknown = sorted({e.label for e in examples} - set(ctx.labels))
    if not unknown:
        return None
    return (
        f"{_KEY}: labels {', '.join(unknown)} are not model labels ({', '.join(ctx.labels)}); map them with "
        f"{_KEY}.label_map"
    )


def _settings_problems(ctx: AuditContext, cfg: FairnessConfig) -> list[str]:
    """The data file's labels that are not the model's (after the sentiment roles are mapped), found before any
    family runs."""
    if ctx.task.labels_each_word or cfg.data is None or cfg.label_column is None:
        return []
    try:
        examples, _, _ = _load_rows(ctx, cfg)
    except FmtoolError as error:
        return [str(error)]
    unknown = _unknown_labels(ctx, _as_model_labels(ctx, examples)[0])
    return [unknown] if unknown else []


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
                warnings.append(
                    f"{len(rows) - len(keep)} rows whose {cfg.label_column} is not in label_map were left out"
                )
            rows, labels = [rows[i] for i in keep], [cfg.label_map[labels[i]] for i in keep]
        examples = [
            TextExample(id=str(i), text=str(r[cfg.text_column]), label=label or "", meta=r)
            for i, (r, label) in enumerate(zip(rows, labels))
        ]
        table = pd.DataFrame(rows)
    if cfg.max_examples:
        examples, table = examples[: cfg.max_examples], table.iloc[: cfg.max_examples]
    return examples, table, warnings


def _classification(ctx: AuditContext, cfg: FairnessConfig) -> AuditResult:
    examples, table, warnings = _load_rows(ctx, cfg)
    examples, mapping = _as_model_labels(ctx, examples)
    warnings += mapping
    columns = cfg.sensitive_columns or [c for c in table.columns if c not in (cfg.text_column, cfg.label_column)]
    if not examples or not columns:
        return AuditResult(
            {},
            [check("sensitive_features", None, max_value=0)],
            warnings=warnings + ["no sensitive features: set audit.fairness.data and audit.fairness.sensitive_columns"],
        )
    has_truth = cfg.data is None or cfg.label_column is not None
    unknown = _unknown_labels(ctx, examples) if has_truth else None
    if unknown:
        raise FmtoolError(unknown)
    positive = cfg.positive_label or (ctx.labels[-1] if len(ctx.labels) == 2 else None)
    if positive is None:
        raise FmtoolError(f"{_KEY}.positive_label must name one of {', '.join(ctx.labels)} for a multiclass model")
    predicted = np.array([p.label == positive for p in ctx.predict(examples)], dtype=int)
    truth = np.array([e.label == positive for e in examples], dtype=int)
    metrics = {**_CLASSIFICATION_METRICS, **(_WITH_TRUTH if has_truth else {})}
    checks, groups_table, gaps = [], [], []
    for column in columns:
        groups = table[column].astype(str).str.strip()
        mask = ((groups != "") & (groups.str.lower() != "nan") & table[column].notna()).values
        if groups[mask].nunique() < 2:
            warnings.append(f"sensitive column '{column}' has fewer than two groups; skipped")
            continue
        members = groups[mask].reset_index(drop=True)
        frame = _metric_frame(metrics, truth[mask], predicted[mask], members)
        intervals = (
            _bootstrap(metrics, truth[mask], predicted[mask], members.values, cfg, ctx.seed) if cfg.n_boot else None
        )
        groups_table += _group_rows(column, frame, intervals)
        gaps += [_gap_row(column, m, frame, intervals) for m in metrics if m != "count"]
        checks += _gap_checks(
            column,
            "selection_rate",
            frame,
            intervals,
            max_difference=cfg.max_demographic_parity_difference,
            min_ratio=cfg.min_demographic_parity_ratio,
            name="demographic_parity",
            what="positive-prediction rate",
        )
        if has_truth:
            eo = float(equalized_odds_difference(truth[mask], predicted[mask], sensitive_features=members.values))
            checks += [
                check(
                    f"{column}.equalized_odds_difference",
                    eo,
                    max_value=cfg.max_equalized_odds_difference,
                    description="largest gap in true or false positive rate",
                    interval=None if intervals is None else intervals.difference["equalized_odds"],
                    n=int(mask.sum()),
                ),
                *_gap_checks(
                    column,
                    "accuracy",
                    frame,
                    intervals,
                    max_difference=cfg.max_accuracy_difference,
                    min_ratio=None,
                    name="accuracy",
                    what="accuracy",
                ),
            ]
    return AuditResult(
        _figures(checks), checks, {"groups": groups_table, "gaps": gaps}, warnings + [f"positive label: {positive}"]
    )


def _ner_probe(cfg: FairnessConfig, kind: str) -> tuple[list[TokenExample], pd.DataFrame]:
    examples, rows = [], []
    for template in ner_templates(cfg.templates, f"{_KEY}.templates"):
        words = template.split()
        slot = words.index("{name}")
        for gender, origins in first_names(cfg.first_names, f"{_KEY}.first_names").items():
            for origin, names in origins.items():
                for name in names:
                    tokens = words[:slot] + [name] + words[slot + 1 :]
                    tags = ["O"] * len(tokens)
                    tags[slot] = f"B-{kind}"
                    examples.append(TokenExample(id=f"{len(examples)}", tokens=tokens, tags=tags))
                    rows.append({"gender": gender, "origin": origin, "slot": slot})
    return examples, pd.DataFrame(rows)


def _ner(ctx: AuditContext, cfg: FairnessConfig) -> AuditResult:
    kind = cfg.person_type or person_type(ctx.labels)
    if kind is None or f"B-{kind}" not in ctx.labels:
        missing = (
            f"no B-{kind} label" if kind else f"no entity type for people ({' or '.join(PERSON_TYPES)}, in any case)"
        )
        return AuditResult(
            {},
            [check("recall_difference", None, max_value=cfg.max_recall_difference)],
            warnings=[f"the model has {missing}; set {_KEY}.person_type"],
        )
    examples, table = _ner_probe(cfg, kind)
    predictions = ctx.predict(examples)
    found = np.array(
        [
            p.tags[slot] == f"B-{kind}" and (slot + 1 == len(p.tags) or p.tags[slot + 1] != f"I-{kind}")
            for p, slot in zip(predictions, table["slot"])
        ],
        dtype=int,
    )
    checks, groups_table, gaps = [], [], []
    truth = np.ones_like(found)
    for feature in ("gender", "origin"):
        frame = _metric_frame(_RECALL_METRICS, truth, found, table[feature])
        intervals = (
            _bootstrap(_RECALL_METRICS, truth, found, table[feature].values, cfg, ctx.seed) if cfg.n_boot else None
        )
        rows = _group_rows(feature, frame, intervals)
        for row in rows:
            members = (table[feature] == row["group"]).values
            report = entity_report(
                [e.tags for e, m in zip(examples, members) if m], [p.tags for p, m in zip(predictions, members) if m]
            )
            row["f1"] = report["micro"]["f1"]
        groups_table += rows
        gaps.append(_gap_row(feature, "recall", frame, intervals))
        checks += _gap_checks(
            feature,
            "recall",
            frame,
            intervals,
            max_difference=cfg.max_recall_difference,
            min_ratio=cfg.min_recall_ratio,
            name="recall",
            what="person-name recall",
        )
    return AuditResult(
        {**_figures(checks), "recall": float(found.mean())},
        checks,
        {"groups": groups_table, "gaps": gaps},
        [f"{len(examples)} template sentences"],
    )


@register(
    "fairness",
    version=1,
    config_type=FairnessConfig,
    description="group fairness of outcomes and errors (fairlearn MetricFrame)",
    check=_settings_problems,
)
def run(ctx: AuditContext, cfg: FairnessConfig) -> AuditResult:
    return _ner(ctx, cfg) if ctx.task.labels_each_word else _classification(ctx, cfg)
