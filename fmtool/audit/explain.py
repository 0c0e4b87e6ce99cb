"""Explanations as evidence: are the model's attributions faithful, which words drive each label, and is any
of them a protected attribute?

On a seeded sample of the evaluation split, every prediction (classification: the label; NER: each predicted
entity) is explained with fmtool/explain.py, then:

- Faithfulness (DeYoung et al. 2020, "ERASER"): for each share k of the words, comprehensiveness is the drop
  in the prediction's probability when the k most supporting words are removed, sufficiency the drop when only
  they are kept; both are averaged over the shares (AOPC) and compared with the same number of random words.
  An explanation must beat random: `comprehensiveness_gain` (attributed minus random) and `sufficiency_gain`
  (random minus attributed) are checked against 0 with bootstrap intervals. Removal deletes words
  (classification) or puts the unknown token in their place (NER, which keeps every word's position).
- Top tokens per label: the words that most often carry the largest attribution (NER: outside the entity).
- Shortcut check: for a protected-attribute word (the bias lexicon: gendered words, first names,
  nationalities, religions) and a label, the share of that label's predictions containing the word in which it
  is the single most supporting word. A word that decides most of the predictions it appears in is a
  shortcut; the check fails when that share's Wilson interval lies above `max_protected_top_share`, with
  examples. Words seen fewer than `min_protected_count` times are listed, not tested.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from typing import Any, List, Optional, Sequence

import numpy as np

from fmtool.audit.base import (
    AuditContext,
    AuditResult,
    evaluation_inputs,
    mean_check,
    rate_check,
    register,
    wilson_interval,
)
from fmtool.config.schema import ranged
from fmtool.dataset.lexicons import protected_groups
from fmtool.errors import FmtoolError
from fmtool.explain import METHODS, Explainer, Explanation, targets_for

_KEY = "audit.explain"


@dataclass
class ExplainConfig:
    splits: List[str] = field(default_factory=lambda: ["validation"])
    max_examples: int = ranged(100, low=1)
    method: str = "integrated_gradients"
    steps: int = ranged(32, low=1)
    # ERASER's k, as shares of an input's words
    shares: List[float] = ranged(factory=lambda: [0.1, 0.2, 0.5], low=0, high=1, low_open=True, high_open=True)
    min_comprehensiveness_gain: float = ranged(0.0, low=-1, high=1)
    min_sufficiency_gain: float = ranged(0.0, low=-1, high=1)
    max_protected_top_share: float = ranged(0.5, low=0, high=1)
    min_protected_count: int = ranged(5, low=1)
    top_tokens: int = ranged(10, low=1)
    listed: int = ranged(10, low=0)
    # fp32: attributions in full precision whatever the run's precision (bf16 gradients blur the integral); run: the
    # run's
    precision: str = "fp32"
    swaps: Optional[str] = None
    first_names: Optional[str] = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise FmtoolError(f"{_KEY}.method: unknown method '{self.method}'; choose from: {', '.join(METHODS)}")
        if not self.shares:
            raise FmtoolError(f"{_KEY}.shares: give at least one share of an input's words")
        if self.precision not in ("fp32", "run"):
            raise FmtoolError(f"{_KEY}.precision={self.precision}: choose fp32 or run")


def _removed(words: Sequence[str], drop: set[int], per_word: bool, unknown: str) -> list[str]:
    """The words with `drop` removed; a tagger's (per_word) are masked in place, so each word keeps its position."""
    if per_word:
        return [unknown if i in drop else w for i, w in enumerate(words)]
    kept = [w for i, w in enumerate(words) if i not in drop]
    return kept or [unknown]


def faithfulness(
    explainer: Explainer, explanations: Sequence[Explanation], shares: Sequence[float], seed: int
) -> dict[str, np.ndarray]:
    """Per explanation, AOPC comprehensiveness and sufficiency of its top words and of as many random words."""
    rng = random.Random(seed)
    unknown = explainer.tokenizer.unk_token or "[UNK]"
    usable = [e for e in explanations if len(e.target.words) >= 2]
    targets, variants = [], []
    for explanation in usable:
        words, n = explanation.target.words, len(explanation.target.words)
        ranked = explanation.ranked()
        for share in shares:
            k = min(n - 1, max(1, round(share * n)))
            for chosen in (set(ranked[:k]), set(rng.sample(range(n), k))):
                variants += [
                    _removed(words, chosen, explainer.per_word, unknown),
                    _removed(words, set(range(n)) - chosen, explainer.per_word, unknown),
                ]
                targets += [explanation.target, explanation.target]
    probabilities = np.array(explainer.probabilities(targets, variants)).reshape(len(usable), len(shares), 2, 2)
    original = np.array([e.probability for e in usable])[:, None, None, None]
    drops = (original - probabilities).mean(axis=1)  # [example, attributed|random, removed|kept]
    return {
        "comprehensiveness": drops[:, 0, 0],
        "comprehensiveness_random": drops[:, 1, 0],
        "sufficiency": drops[:, 0, 1],
        "sufficiency_random": drops[:, 1, 1],
    }


def _top_word(explanation: Explanation) -> Optional[str]:
    ranked = explanation.ranked(outside_span=True)
    if not ranked or explanation.attributions[ranked[0]] <= 0:
        return None
    return explanation.target.words[ranked[0]].lower()


def top_tokens(explanations: Sequence[Explanation], limit: int) -> list[dict[str, Any]]:
    """Per label, the words most often the most supporting one, with their mean attribution where they occur."""
    by_label: dict[str, list[Explanation]] = defaultdict(list)
    for explanation in explanations:
        by_label[explanation.target.label].append(explanation)
    rows = []
    for label, group in sorted(by_label.items()):
        tops = Counter(w for w in map(_top_word, group) if w is not None)
        for word, count in tops.most_common(limit):
            scores = [a for e in group for w, a in zip(e.target.words, e.attributions) if w.lower() == word]
            rows.append(
                {
                    "label": label,
                    "word": word,
                    "times_top": count,
                    "share_top": round(count / len(group), 4),
                    "mean_attribution": round(float(np.mean(scores)), 5),
                }
            )
    return rows


def protected_shortcuts(
    explanations: Sequence[Explanation], groups: dict[str, set[str]], min_count: int
) -> list[dict[str, Any]]:
    """For each (label, protected word) seen at least min_count times: how often the word is the top one."""
    group_of = {term: name for name, terms in groups.items() for term in terms}
    seen: dict[tuple[str, str], list[Explanation]] = defaultdict(list)
    for explanation in explanations:
        skip = set(explanation.target.span_words)
        present = {w.lower() for i, w in enumerate(explanation.target.words) if i not in skip and w.lower() in group_of}
        for word in present:
            seen[(explanation.target.label, word)].append(explanation)
    rows = []
    for (label, word), group in seen.items():
        top = [e for e in group if _top_word(e) == word]
        low, high = wilson_interval(len(top), len(group))
        rows.append(
            {
                "label": label,
                "word": word,
                "group": group_of[word],
                "predictions": len(group),
                "times_top": len(top),
                "share_top": round(len(top) / len(group), 4),
                "interval": [round(low, 4), round(high, 4)],
                "tested": len(group) >= min_count,
                "example": " ".join(top[0].target.words) if top else "",
            }
        )
    return sorted(rows, key=lambda r: (-r["tested"], -r["interval"][0], -r["predictions"]))


def _row(explanation: Explanation) -> dict[str, Any]:
    """One explanation as a report row: the text, the prediction and its three most supporting words."""
    target = explanation.target
    row = {"id": target.example_id, "label": target.label, "probability": round(explanation.probability, 4)}
    if target.span is not None:
        row["entity"] = " ".join(target.words[target.span[0] : target.span[1] + 1])
    top = explanation.ranked()[:3]
    return {
        **row,
        "top_words": ", ".join(f"{target.words[i]} {explanation.attributions[i]:+.3f}" for i in top),
        "text": " ".join(target.words),
    }


def _sample(examples: list, limit: int, seed: int) -> list:
    if len(examples) <= limit:
        return examples
    return [examples[i] for i in sorted(random.Random(seed).sample(range(len(examples)), limit))]


@register(
    "explain",
    version=1,
    config_type=ExplainConfig,
    description="attribution faithfulness (ERASER vs random), top tokens per label, protected-word shortcuts",
)
def run(ctx: AuditContext, cfg: ExplainConfig) -> AuditResult:
    examples = _sample(evaluation_inputs(ctx, data=None, splits=cfg.splits, key=_KEY), cfg.max_examples, ctx.seed)
    max_length = ctx.config.trainer.max_length if ctx.config is not None else min(ctx.tokenizer.model_max_length, 512)
    runtime = replace(ctx.runtime, autocast_dtype=None) if cfg.precision == "fp32" else ctx.runtime
    explainer = Explainer(ctx.model, ctx.tokenizer, runtime, per_word=ctx.task.labels_each_word, max_length=max_length)
    explanations = explainer.explain(
        targets_for(examples, ctx.predict(examples), ctx.task.labels_each_word, explainer.label2id),
        method=cfg.method,
        steps=cfg.steps,
    )
    drops = faithfulness(explainer, explanations, cfg.shares, ctx.seed)
    comprehensiveness_gain = drops["comprehensiveness"] - drops["comprehensiveness_random"]
    sufficiency_gain = drops["sufficiency_random"] - drops["sufficiency"]
    shortcuts = protected_shortcuts(
        explanations, protected_groups(cfg.swaps, cfg.first_names, _KEY), cfg.min_protected_count
    )
    tested = [r for r in shortcuts if r["tested"]]
    worst = tested[0] if tested else None
    checks = [
        mean_check(
            "comprehensiveness_gain",
            comprehensiveness_gain,
            min_value=cfg.min_comprehensiveness_gain,
            seed=ctx.seed,
            description="drop in the prediction's probability when its top-attributed words are removed, minus the "
            "drop for as many random words",
        ),
        mean_check(
            "sufficiency_gain",
            sufficiency_gain,
            min_value=cfg.min_sufficiency_gain,
            seed=ctx.seed,
            description="how much better the top-attributed words alone keep the prediction than as many random words",
        ),
        rate_check(
            "protected_shortcut",
            worst["times_top"] if worst else 0,
            worst["predictions"] if worst else 0,
            max_value=cfg.max_protected_top_share,
            description=(
                f"'{worst['word']}' ({worst['group']}) is the top word in {worst['times_top']} of "
                f"{worst['predictions']} "
                f"'{worst['label']}' predictions containing it"
            )
            if worst
            else "no protected word occurs often enough to test",
        ),
    ]
    deltas = [e.delta for e in explanations if e.delta is not None]
    summary = {
        "explained": float(len(explanations)),
        "examples": float(len(examples)),
        **{name: float(np.mean(values)) if len(values) else float("nan") for name, values in drops.items()},
        "mean_abs_convergence_delta": float(np.mean(deltas)) if deltas else float("nan"),
    }
    listed = sorted(explanations, key=lambda e: -e.probability)[: cfg.listed]
    tables = {
        "top_tokens": top_tokens(explanations, cfg.top_tokens),
        "protected_shortcuts": shortcuts[: cfg.listed * 2],
        "explanations": [_row(e) for e in listed],
    }
    return AuditResult(summary=summary, checks=checks, tables=tables)
