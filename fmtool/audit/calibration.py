"""Calibration: does the model's confidence match how often it is right?

Classification: the confidence is the predicted label's probability and the outcome whether it equals the
gold label. NER: at entity level, the confidence is a predicted entity's score (the mean of its words'
probabilities) and the outcome whether the gold data has that entity (type and span). Reported: expected
calibration error with equal-width bins (Guo et al. 2017) and with equal-mass bins, maximum calibration
error, the Brier score (classification, over all labels), the reliability-diagram points, and, beside them
and never applied, the temperature that minimises the validation negative log-likelihood with the ECE it
would give. ECE is unreliable on small samples (HELM): under `min_examples` the check is skipped with the
reason; otherwise its bootstrap interval decides.

Citations: Guo et al. 2017, "On Calibration of Modern Neural Networks"; Naeini et al. 2015, "Obtaining Well
Calibrated Probabilities Using Bayesian Binning"; Brier 1950.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List

import numpy as np
from seqeval.metrics.sequence_labeling import get_entities

from fmtool.audit.base import AuditContext, AuditResult, bootstrap_interval, check, evaluation_inputs, register
from fmtool.config.schema import ranged

_KEY = "audit.calibration"


@dataclass
class CalibrationConfig:
    splits: List[str] = field(default_factory=lambda: ["validation"])
    bins: int = ranged(10, low=2)
    min_examples: int = ranged(300, low=1)
    max_examples: int = ranged(5000, low=1)
    max_ece: float = ranged(0.1, low=0, high=1)
    n_boot: int = ranged(200, low=0)


def calibration_error(
    confidence: np.ndarray, correct: np.ndarray, bins: int, *, equal_mass: bool = False
) -> tuple[float, float, list[dict[str, Any]]]:
    """(ECE, MCE, reliability rows) of confidences against 0/1 outcomes."""
    if equal_mass:
        edges = np.quantile(confidence, np.linspace(0, 1, bins + 1))
        which = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, bins - 1)
    else:
        edges = np.linspace(0, 1, bins + 1)
        which = np.clip((confidence * bins).astype(int), 0, bins - 1)
    ece, mce, rows = 0.0, 0.0, []
    for b in range(bins):
        inside = which == b
        if not inside.any():
            continue
        gap = abs(confidence[inside].mean() - correct[inside].mean())
        ece += inside.mean() * gap
        mce = max(mce, gap)
        rows.append(
            {
                "bin": b,
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "count": int(inside.sum()),
                "confidence": float(confidence[inside].mean()),
                "accuracy": float(correct[inside].mean()),
            }
        )
    return float(ece), float(mce), rows


def _tempered(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    logits = np.log(np.clip(probabilities, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def fit_temperature(probabilities: np.ndarray, gold: np.ndarray) -> float:
    """The temperature (on log-probabilities) with the lowest negative log-likelihood, by a log-spaced search."""
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 200))
    nll = [-np.log(np.clip(_tempered(probabilities, t)[np.arange(len(gold)), gold], 1e-12, 1.0)).mean() for t in grid]
    return float(grid[int(np.argmin(nll))])


def _classification(examples, predictions) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    labels = list(predictions[0].probabilities)
    probabilities = np.array([[p.probabilities[label] for label in labels] for p in predictions])
    gold = np.array([labels.index(e.label) for e in examples])
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == gold).astype(float)
    brier = float(((probabilities - np.eye(len(labels))[gold]) ** 2).sum(axis=1).mean())
    temperature = fit_temperature(probabilities, gold)
    tempered = _tempered(probabilities, temperature)
    ece_tempered, _, _ = calibration_error(tempered.max(axis=1), (tempered.argmax(axis=1) == gold).astype(float), 10)
    return confidence, correct, {"brier": brier, "temperature": temperature, "ece_after_temperature": ece_tempered}


def _ner(examples, predictions) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    confidence, correct = [], []
    for example, prediction in zip(examples, predictions):
        gold = set(get_entities(list(example.tags)))
        for kind, first, last in get_entities(list(prediction.tags)):
            confidence.append(float(np.mean(prediction.scores[first : last + 1])))
            correct.append(float((kind, first, last) in gold))
    return np.array(confidence), np.array(correct), {}


@register(
    "calibration",
    version=1,
    config_type=CalibrationConfig,
    description="expected calibration error, Brier score, reliability diagram",
)
def run(ctx: AuditContext, cfg: CalibrationConfig) -> AuditResult:
    examples = evaluation_inputs(ctx, data=None, splits=cfg.splits, key=_KEY)[: cfg.max_examples]
    predictions = ctx.predict(examples)
    confidence, correct, extra = (
        _ner(examples, predictions) if ctx.task.labels_each_word else _classification(examples, predictions)
    )
    unit = "predicted entities" if ctx.task.labels_each_word else "examples"
    if len(confidence) < cfg.min_examples:
        warning = (
            f"{len(confidence)} {unit}, fewer than min_examples={cfg.min_examples}: ECE is unreliable on so few "
            "(HELM); the check is skipped"
        )
        return AuditResult(
            {"count": float(len(confidence))},
            [check("ece", None, max_value=cfg.max_ece, n=len(confidence))],
            warnings=[warning],
        )
    ece, mce, reliability = calibration_error(confidence, correct, cfg.bins)
    ece_mass, _, _ = calibration_error(confidence, correct, cfg.bins, equal_mass=True)
    interval = bootstrap_interval(
        np.stack([confidence, correct], axis=1),
        lambda rows: calibration_error(rows[:, 0], rows[:, 1], cfg.bins)[0],
        n_boot=cfg.n_boot,
        seed=ctx.seed,
    )
    summary = {
        "ece": ece,
        "ece_equal_mass": ece_mass,
        "mce": mce,
        "accuracy": float(correct.mean()),
        "mean_confidence": float(confidence.mean()),
        "count": float(len(confidence)),
        **extra,
    }
    checks = [
        check(
            "ece",
            ece,
            max_value=cfg.max_ece,
            interval=interval,
            n=len(confidence),
            description=f"expected calibration error over {cfg.bins} equal-width bins of {unit}",
        )
    ]
    return AuditResult(summary, checks, {"reliability": reliability})
