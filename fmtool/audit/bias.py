"""Counterfactual bias: does the prediction change when only a protected attribute's words change?

Every evaluation input that mentions a protected attribute is rewritten with its counterpart terms
(gendered words and pronouns both ways; first names to the other gender of the same origin, and to
the same gender of every other origin; nationalities; religions), whole words only and case kept.
For NER the swap is word for word, so gold and predicted tags stay aligned. Per attribute it reports
how often the prediction flips and the mean absolute change in the predicted label's probability,
taking the worst case over an example's variants (HELM), with the worst examples listed.

Citations: Garg et al. 2019, "Counterfactual Fairness in Text Classification through Robustness";
Liang et al. 2022, "Holistic Evaluation of Language Models" (HELM), Sec. fairness perturbations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence

import numpy as np

from fmtool.audit.base import AuditContext, AuditResult, evaluation_inputs, mean_check, rate_check, register
from fmtool.config.schema import ranged
from fmtool.dataset.counterfactual import ATTRIBUTES, counterfactual_groups, counterfactuals
from fmtool.dataset.examples import Example, TokenExample

_KEY = "audit.bias"


@dataclass
class BiasConfig:
    # a text file, one input per line (classification only); null: the run's evaluation splits
    data: Optional[str] = None
    splits: List[str] = field(default_factory=lambda: ["validation"])
    attributes: List[str] = field(default_factory=lambda: list(ATTRIBUTES))
    swaps: Optional[str] = None
    first_names: Optional[str] = None
    max_examples: Optional[int] = ranged(2000, low=1)
    min_examples: int = ranged(10, low=1)
    worst_examples: int = ranged(5, low=0)
    max_flip_rate: float = ranged(0.05, low=0, high=1)
    max_mean_probability_change: float = ranged(0.05, low=0, high=1)


def substitution_groups(cfg: BiasConfig) -> dict[str, dict[str, tuple[str, ...]]]:
    return counterfactual_groups(cfg.attributes, swaps=cfg.swaps, names_file=cfg.first_names, key=_KEY)


def _compare(original, changed) -> tuple[bool, float]:
    """(prediction flipped, probability change) between two predictions of one task."""
    if hasattr(original, "tags"):
        change = (
            float(np.mean(np.abs(np.array(original.scores) - np.array(changed.scores)))) if original.scores else 0.0
        )
        return original.tags != changed.tags, change
    return original.label != changed.label, abs(
        original.probabilities[original.label] - changed.probabilities[original.label]
    )


def _describe(example: Example, prediction) -> dict[str, Any]:
    if isinstance(example, TokenExample):
        return {"text": " ".join(example.tokens), "predicted": " ".join(prediction.tags)}
    return {
        "text": example.text,
        "predicted": prediction.label,
        "probability": round(prediction.probabilities[prediction.label], 4),
    }


def _attribute_result(
    attribute: str, examples: Sequence[Example], variants: list[list[Example]], predictions: list, cfg: BiasConfig
) -> tuple[list[bool], list[float], list[dict]]:
    """Per example: flipped under any variant, the largest probability change; and the worst examples."""
    flips, changes, worst = [], [], []
    cursor = len(examples)
    for index, example in enumerate(examples):
        outcomes = [_compare(predictions[index], predictions[cursor + k]) for k in range(len(variants[index]))]
        worst_k = max(range(len(outcomes)), key=lambda k: (outcomes[k][0], outcomes[k][1]))
        flips.append(any(flipped for flipped, _ in outcomes))
        changes.append(max(change for _, change in outcomes))
        worst.append(
            {
                "attribute": attribute,
                "flipped": flips[-1],
                "probability_change": round(changes[-1], 4),
                "original": _describe(example, predictions[index]),
                "counterfactual": _describe(variants[index][worst_k], predictions[cursor + worst_k]),
            }
        )
        cursor += len(variants[index])
    worst.sort(key=lambda row: (row["flipped"], row["probability_change"]), reverse=True)
    return flips, changes, worst[: cfg.worst_examples]


@register(
    "bias", version=2, config_type=BiasConfig, description="counterfactual invariance to protected-attribute words"
)
def run(ctx: AuditContext, cfg: BiasConfig) -> AuditResult:
    inputs = evaluation_inputs(ctx, data=cfg.data, splits=cfg.splits, key=_KEY)
    summary, checks, rows, worst, warnings = {}, [], [], [], []
    for attribute, lookup in substitution_groups(cfg).items():
        rewrites = [(e, counterfactuals(e, lookup)) for e in inputs]
        pairs = [(e, v) for e, v in rewrites if v][: cfg.max_examples]
        mentioned, variants = [e for e, _ in pairs], [v for _, v in pairs]
        predictions = ctx.predict([*mentioned, *(v for group in variants for v in group)]) if mentioned else []
        flips, changes, examples = _attribute_result(attribute, mentioned, variants, predictions, cfg)
        if len(flips) < cfg.min_examples:
            warnings.append(
                f"{attribute}: {len(flips)} inputs mention it, fewer than min_examples={cfg.min_examples}; its "
                "checks are skipped"
            )
            flips, changes = [], []
        flip_check = rate_check(
            f"{attribute}.flip_rate",
            sum(flips),
            len(flips),
            max_value=cfg.max_flip_rate,
            description="share of inputs whose prediction changes",
        )
        change_check = mean_check(
            f"{attribute}.mean_probability_change",
            changes,
            max_value=cfg.max_mean_probability_change,
            description="mean |change| in the predicted label's probability",
            seed=ctx.seed,
        )
        figures = {
            "examples": float(len(mentioned)),
            "flip_rate": flip_check.value,
            "mean_probability_change": change_check.value,
        }
        rows.append({"attribute": attribute, **figures, "flip_rate_ci": flip_check.interval})
        worst += examples
        summary.update({f"{attribute}.{k}": float("nan") if v is None else float(v) for k, v in figures.items()})
        checks += [flip_check, change_check]
    return AuditResult(summary, checks, {"attributes": rows, "worst_examples": worst}, warnings)
