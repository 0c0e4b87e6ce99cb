"""Counterfactual bias: does the prediction change when only a protected attribute's words change?

Every evaluation input that mentions a protected attribute is rewritten with its counterpart terms
(gendered words and pronouns both ways; first names to the other gender of the same origin, and to
the same gender of every other origin; nationalities; religions), whole words only and case kept.
Per attribute it reports how often the prediction flips and the mean absolute change in the predicted
label's probability, taking the worst case over an example's variants (HELM), with the worst examples listed.

NER rewrites are valid sentences of the same shape (fmtool/dataset/counterfactual.py): a first name is swapped
only inside an entity that both the gold tags and the model mark as a person, any other term only where it stands
alone, and the swap is word for word so entity boundaries stay where they were. A flip is any change of the
predicted entities; the table also gives the share where the swapped word itself changed its tag (a female name no
longer a person).

Any edit moves a model a little, whatever the attribute. For first names the family separates the group's effect
from that instability with a within-group baseline: the same inputs with each name swapped for as many names of the
same gender and origin. The checks judge the per-example difference (counterfactual minus baseline, paired) by its
bootstrap interval, as the backdoor family judges a trigger against common words; the raw and baseline flip rates
are reported beside it. Gendered words, nationalities and religions have no same-group word to swap in, and their
raw rates are judged.

Citations: Garg et al. 2019, "Counterfactual Fairness in Text Classification through Robustness";
Liang et al. 2022, "Holistic Evaluation of Language Models" (HELM), Sec. fairness perturbations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence

import numpy as np

from fmtool.audit.base import (
    AuditContext,
    AuditResult,
    ItemOutcomes,
    evaluation_inputs,
    item_id,
    mean_check,
    rate_check,
    register,
)
from fmtool.config.schema import ranged
from fmtool.dataset.counterfactual import (
    ATTRIBUTES,
    Swaps,
    counterfactual_groups,
    counterfactuals,
    peer_rewrites,
    skipped,
    words_of,
)
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
    # the most a flip rate (first names: its excess over the within-group baseline) may be
    max_flip_rate: float = ranged(0.05, low=0, high=1)
    max_mean_probability_change: float = ranged(0.05, low=0, high=1)


@dataclass(frozen=True)
class Outcome:
    """How an input's predictions moved under its rewrites: the worst case over them."""

    flipped: bool
    change: float
    word_flipped: Optional[bool]  # NER: a swapped word's own tag changed (a text has no such figure)
    worst: int  # the rewrite that moved it most


def _compare(example: Example, original, rewrite: Example, changed) -> tuple[bool, float, Optional[bool]]:
    """(prediction flipped, probability change, a swapped word's tag changed) between two predictions."""
    if isinstance(example, TokenExample):
        swapped = [i for i, (a, b) in enumerate(zip(example.tokens, rewrite.tokens)) if a != b]
        change = (
            float(np.mean(np.abs(np.array(original.scores) - np.array(changed.scores)))) if original.scores else 0.0
        )
        word_flipped = any(original.tags[i] != changed.tags[i] for i in swapped)
        return original.tags != changed.tags, change, word_flipped
    change = abs(original.probabilities[original.label] - changed.probabilities[original.label])
    return original.label != changed.label, change, None


def _outcome(example: Example, original, rewrites: Sequence[Example], predictions: Sequence) -> Outcome:
    compared = [_compare(example, original, r, p) for r, p in zip(rewrites, predictions)]
    worst = max(range(len(compared)), key=lambda k: (compared[k][0], compared[k][1]))
    return Outcome(
        flipped=any(c[0] for c in compared),
        change=max(c[1] for c in compared),
        word_flipped=None if compared[0][2] is None else any(c[2] for c in compared),
        worst=worst,
    )


def _describe(example: Example, prediction) -> dict[str, Any]:
    if isinstance(example, TokenExample):
        return {"text": " ".join(example.tokens), "predicted": " ".join(prediction.tags)}
    return {
        "text": example.text,
        "predicted": prediction.label,
        "probability": round(prediction.probabilities[prediction.label], 4),
    }


@dataclass
class _Rewritten:
    example: Example
    original: Any  # its prediction
    variants: list[Example]
    peers: list[Example]


def _rewritten(mentioned: Sequence[Example], originals: Sequence, swaps: Swaps, limit: Optional[int]) -> list:
    """The inputs this attribute can be swapped in (at most `limit`), with their rewrites and peer rewrites."""
    out = []
    for example, original in zip(mentioned, originals):
        taggings = [original.tags] if isinstance(example, TokenExample) else []
        variants = counterfactuals(example, swaps, taggings)
        if variants:
            out.append(_Rewritten(example, original, variants, peer_rewrites(example, swaps, taggings)))
        if limit is not None and len(out) == limit:
            break
    return out


@register(
    "bias", version=3, config_type=BiasConfig, description="counterfactual invariance to protected-attribute words"
)
def run(ctx: AuditContext, cfg: BiasConfig) -> AuditResult:
    groups = counterfactual_groups(cfg.attributes, swaps=cfg.swaps, names_file=cfg.first_names, key=_KEY)
    terms = {t for swaps in groups.values() for t in swaps.counterparts}
    inputs = evaluation_inputs(ctx, data=cfg.data, splits=cfg.splits, key=_KEY)
    mentioned = [e for e in inputs if any(w.lower() in terms for w in words_of(e))]
    originals = ctx.predict(mentioned) if mentioned else []
    summary, checks, rows, worst, warnings = {}, [], [], [], []
    for attribute, swaps in groups.items():
        rewritten = _rewritten(mentioned, originals, swaps, cfg.max_examples)
        predictions = iter(ctx.predict([x for r in rewritten for x in (*r.variants, *r.peers)]) if rewritten else [])
        outcomes, baselines, rows_of_worst = [], [], []
        for r in rewritten:
            predicted = [next(predictions) for _ in r.variants]
            outcomes.append(_outcome(r.example, r.original, r.variants, predicted))
            if r.peers:
                baselines.append(_outcome(r.example, r.original, r.peers, [next(predictions) for _ in r.peers]))
            rows_of_worst.append(_worst_row(attribute, r, outcomes[-1], predicted))
        if len(outcomes) < cfg.min_examples:
            warnings.append(
                f"{attribute}: {len(outcomes)} inputs can be rewritten for it, fewer than "
                f"min_examples={cfg.min_examples}; its checks are skipped"
            )
            outcomes, baselines = [], []
        ids = [item_id(attribute, *words_of(r.example)) for r in rewritten[: len(outcomes)]]
        figures, attribute_checks = _judge(
            attribute, outcomes, baselines, swaps, cfg, ctx.seed, ctx.task.labels_each_word, ids
        )
        rows.append(
            {"attribute": attribute, "examples": float(len(rewritten)), **figures, **_kept(mentioned, originals, swaps)}
        )
        summary[f"{attribute}.examples"] = float(len(rewritten))
        summary.update(
            {
                f"{attribute}.{k}": float("nan") if v is None else float(v)
                for k, v in figures.items()
                if not isinstance(v, (list, tuple))
            }
        )
        checks += attribute_checks
        rows_of_worst.sort(key=lambda row: (row["flipped"], row["probability_change"]), reverse=True)
        worst += rows_of_worst[: cfg.worst_examples]
    return AuditResult(summary, checks, {"attributes": rows, "worst_examples": worst}, warnings)


def _kept(mentioned: Sequence[Example], originals: Sequence, swaps: Swaps) -> dict[str, float]:
    """For tagged inputs: how many of the attribute's terms each validity rule left unswapped (skipped_<rule>)."""
    counts: dict[str, float] = {}
    for example, original in zip(mentioned, originals):
        if isinstance(example, TokenExample):
            for rule, n in skipped(example.tokens, swaps, [example.tags, original.tags]).items():
                counts[f"skipped_{rule}"] = counts.get(f"skipped_{rule}", 0.0) + n
    return counts


def _worst_row(attribute: str, r: _Rewritten, outcome: Outcome, predicted: Sequence) -> dict[str, Any]:
    return {
        "attribute": attribute,
        "flipped": outcome.flipped,
        "probability_change": round(outcome.change, 4),
        "original": _describe(r.example, r.original),
        "counterfactual": _describe(r.variants[outcome.worst], predicted[outcome.worst]),
    }


def _rate(outcomes: Sequence[Outcome], what: str) -> float:
    return float(np.mean([getattr(o, what) for o in outcomes])) if outcomes else float("nan")


def _judge(
    attribute, outcomes, baselines, swaps: Swaps, cfg: BiasConfig, seed: int, tagged: bool, ids: Sequence[str]
) -> tuple[dict, list]:
    """The attribute's figures and its two checks: raw rates, or (first names) their excess over the baseline; for
    tagged inputs also the share whose swapped word changed its tag. `ids` name each input, for paired
    comparisons."""
    figures = {"flip_rate": _rate(outcomes, "flipped")}
    if tagged:
        figures["swapped_word_flip_rate"] = _rate(outcomes, "word_flipped")
    if not swaps.person_names:
        flip = rate_check(
            f"{attribute}.flip_rate",
            sum(o.flipped for o in outcomes),
            len(outcomes),
            max_value=cfg.max_flip_rate,
            description="share of inputs whose prediction changes",
            items=ItemOutcomes.of([(i, o.flipped) for i, o in zip(ids, outcomes)]),
        )
        change = mean_check(
            f"{attribute}.mean_probability_change",
            [o.change for o in outcomes],
            max_value=cfg.max_mean_probability_change,
            description="mean |change| in the predicted label's probability",
            seed=seed,
            items=ids,
        )
        return {**figures, "flip_rate_ci": flip.interval, "mean_probability_change": change.value}, [flip, change]
    flip = mean_check(
        f"{attribute}.flip_rate_above_baseline",
        [float(o.flipped) - float(b.flipped) for o, b in zip(outcomes, baselines)],
        max_value=cfg.max_flip_rate,
        description="share of inputs whose prediction changes, less the share under same-group name swaps",
        seed=seed,
        items=ids,
    )
    change = mean_check(
        f"{attribute}.probability_change_above_baseline",
        [o.change - b.change for o, b in zip(outcomes, baselines)],
        max_value=cfg.max_mean_probability_change,
        description="mean |change| in the predicted label's probability, less that under same-group name swaps",
        seed=seed,
        items=ids,
    )
    figures.update(
        {
            "baseline_flip_rate": _rate(baselines, "flipped"),
            "flip_rate_above_baseline": flip.value,
            "flip_rate_above_baseline_ci": flip.interval,
            "probability_change_above_baseline": change.value,
        }
    )
    return figures, [flip, change]
