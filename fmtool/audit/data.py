"""The data behind the model: label balance, who the data mentions, lengths, and train/evaluation leakage.

- Representation: examples per label (NER: entities per type) in the training split, against LangTest's
  `min_label_representation_count`.
- Protected groups: mentions of gendered words (the bias audit's lexicon, split into its two sides), first
  names by gender and by origin, nationalities and religions, per split, with each group's label
  distribution next to the split's; the most skewed associations (binomial p-value) are listed, and the gap in
  label shares between texts mentioning female and male terms is checked (Newcombe's interval for a
  difference of proportions).
- Lengths: words per example per split (and, with the run's tokenizer, the share of classification inputs
  longer than trainer.max_length tokens, which training truncated).
- Leakage: evaluation examples whose text also occurs in training, exactly or nearly (the same words after
  lower-casing, dropping punctuation and folding numbers; or a word-set Jaccard similarity of at least
  `near_duplicate_jaccard` with a training example sharing its rarest words). Leakage inflates every metric.

Citations: Nazir et al. 2024, "LangTest" (representation tests); Lee et al. 2022, "Deduplicating Training
Data Makes Language Models Better"; Newcombe 1998, "Interval estimation for the difference between
independent proportions".
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence

import numpy as np
from scipy.stats import binom
from seqeval.metrics.sequence_labeling import get_entities

from fmtool.audit.base import AuditContext, AuditResult, check, rate_check, register, wilson_interval
from fmtool.config.schema import ranged
from fmtool.dataset.examples import Example, TokenExample, label_kinds
from fmtool.dataset.examples import words as example_words
from fmtool.dataset.lexicons import protected_groups

_KEY = "audit.data"


@dataclass
class DataConfig:
    evaluation_splits: List[str] = field(default_factory=lambda: ["validation", "test"])
    min_label_representation_count: int = ranged(50, low=0)
    max_leakage_rate: float = ranged(0.01, low=0, high=1)
    near_duplicate_jaccard: float = ranged(0.9, low=0, high=1, low_open=True)
    min_mentions: int = ranged(20, low=1)  # a group mentioned by fewer examples is listed but not tested
    max_gender_label_gap: float = ranged(0.1, low=0, high=1)
    swaps: Optional[str] = None
    first_names: Optional[str] = None
    listed: int = ranged(10, low=0)


def _words(example: Example) -> list[str]:
    """The example's words lower-cased, punctuation marks left out."""
    return [w.lower() for w in example_words(example) if any(c.isalnum() for c in w)]


def normalised(example: Example) -> str:
    """The example's words, lower-cased, punctuation dropped and numbers folded: near-identical texts collide."""
    return " ".join("0" if w.isdigit() else w for w in _words(example))


def leaked(train: Sequence[Example], evaluation: Sequence[Example], jaccard: float) -> list[tuple[int, int, str]]:
    """(evaluation index, training index, "exact" | "near") for every evaluation example found in training."""
    by_text = {}
    for i, example in enumerate(train):
        by_text.setdefault(normalised(example), i)
    word_sets = [set(_words(e)) for e in train]
    frequency = Counter(w for words in word_sets for w in words)
    index: dict[str, list[int]] = defaultdict(list)
    for i, words in enumerate(word_sets):
        for w in sorted(words, key=lambda w: (frequency[w], w))[:2]:
            index[w].append(i)
    found = []
    for j, example in enumerate(evaluation):
        text = normalised(example)
        if text in by_text:
            found.append((j, by_text[text], "exact"))
            continue
        words = set(_words(example))
        if not words:
            continue
        rare = sorted(words, key=lambda w: (frequency.get(w, 0), w))[:2]
        candidates = {i for w in rare for i in index.get(w, [])}
        best = max(candidates, key=lambda i: len(words & word_sets[i]) / len(words | word_sets[i]), default=None)
        if best is not None and len(words & word_sets[best]) / len(words | word_sets[best]) >= jaccard:
            found.append((j, best, "near"))
    return found


def _newcombe(k1: int, n1: int, k2: int, n2: int) -> tuple[float, tuple[float, float]]:
    """|p1 - p2| and its interval from Newcombe's hybrid score method (Wilson intervals of each side)."""
    p1, p2 = k1 / n1, k2 / n2
    (l1, u1), (l2, u2) = wilson_interval(k1, n1), wilson_interval(k2, n2)
    low, high = (
        p1 - p2 - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
        p1 - p2 + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2),
    )
    magnitude = (0.0 if low <= 0 <= high else min(abs(low), abs(high)), max(abs(low), abs(high)))
    return abs(p1 - p2), magnitude


def _mentions(
    examples: Sequence[Example], groups: dict[str, set[str]], split: str
) -> tuple[list[dict], dict[str, list[set[str]]]]:
    """Rows per group mentioned in `split` with its most over-represented label, and each group's examples' labels."""
    labelled: dict[str, list[set[str]]] = defaultdict(list)
    for example in examples:
        words = set(_words(example))
        for group, terms in groups.items():
            if words & terms:
                labelled[group].append(label_kinds(example))
    base = Counter(label for e in examples for label in label_kinds(e))
    rows = []
    for group, label_sets in labelled.items():
        counts = Counter(label for labels in label_sets for label in labels)
        label, k = max(counts.items(), key=lambda kv: kv[1] / len(label_sets) - base[kv[0]] / len(examples))
        rows.append(
            {
                "split": split,
                "group": group,
                "examples": len(label_sets),
                "label": label,
                "share": k / len(label_sets),
                "split_share": base[label] / len(examples),
                "p_value": float(binom.sf(k - 1, len(label_sets), base[label] / len(examples))),
            }
        )
    rows.sort(key=lambda r: r["p_value"])
    return rows, labelled


def _lengths(split: str, examples: Sequence[Example], ctx: AuditContext) -> dict[str, Any]:
    lengths = np.array([len(_words(e)) for e in examples])
    row = {
        "split": split,
        "examples": len(examples),
        "min_words": int(lengths.min()),
        "median_words": float(np.median(lengths)),
        "p95_words": float(np.percentile(lengths, 95)),
        "max_words": int(lengths.max()),
    }
    if not ctx.task.labels_each_word and ctx.tokenizer is not None and ctx.config is not None:
        limit = ctx.config.trainer.max_length
        ids = ctx.tokenizer(
            [e.text for e in examples], [e.text_pair for e in examples] if examples[0].text_pair is not None else None
        )["input_ids"]
        row["truncated_share"] = float(np.mean([len(i) > limit for i in ids]))
    return row


def _representation(train: Sequence[Example], cfg: DataConfig, labels: Sequence[str]) -> tuple[list[dict], list]:
    if train and isinstance(train[0], TokenExample):
        counts = Counter(kind for e in train for kind, _, _ in get_entities(list(e.tags)))
        names = sorted({label[2:] for label in labels if label != "O"} | set(counts))
    else:
        counts = Counter(e.label for e in train)
        names = list(labels) or sorted(counts)
    rows = [{"label": name, "train_count": counts.get(name, 0)} for name in names]
    checks = [
        check(
            f"{r['label']}.representation_count",
            float(r["train_count"]),
            min_value=cfg.min_label_representation_count,
            description="training examples (NER: entities) of the label",
        )
        for r in rows
    ]
    return rows, checks


@register(
    "data",
    version=1,
    config_type=DataConfig,
    description="label representation, protected-group mentions, lengths, train/evaluation leakage",
)
def run(ctx: AuditContext, cfg: DataConfig) -> AuditResult:
    if "train" not in ctx.available_splits:
        return AuditResult(
            {},
            [check("leakage_rate", None, max_value=cfg.max_leakage_rate)],
            warnings=["the data audit reads a run's saved splits; this model has none"],
        )
    train = ctx.load_split("train")
    evaluation = {s: ctx.load_split(s) for s in cfg.evaluation_splits if s in ctx.available_splits}
    representation, checks = _representation(train, cfg, ctx.labels)
    summary: dict[str, float] = {"train_examples": float(len(train))}
    leaks, lengths = [], [_lengths("train", train, ctx)]
    total, leaked_count = 0, 0
    for split, examples in evaluation.items():
        found = leaked(train, examples, cfg.near_duplicate_jaccard)
        total += len(examples)
        leaked_count += len(found)
        summary[f"{split}.leaked"] = float(len(found))
        summary[f"{split}.exact_duplicates"] = float(sum(kind == "exact" for _, _, kind in found))
        leaks += [
            {
                "split": split,
                "kind": kind,
                "evaluation": " ".join(_words(examples[j]))[:200],
                "train": " ".join(_words(train[i]))[:200],
            }
            for j, i, kind in found
        ]
        lengths.append(_lengths(split, examples, ctx))
    checks.append(
        rate_check(
            "leakage_rate",
            leaked_count,
            total,
            max_value=cfg.max_leakage_rate,
            description="share of evaluation examples whose text (or a near copy) is in the training split",
        )
    )
    groups = protected_groups(cfg.swaps, cfg.first_names, _KEY)
    mentions, labelled = _mentions(train, groups, "train")
    male, female = labelled.get("gender:male", []), labelled.get("gender:female", [])
    if min(len(male), len(female)) >= cfg.min_mentions:
        gaps = []
        for label in sorted({label for s in male + female for label in s}):
            gaps.append(
                (
                    label,
                    *_newcombe(sum(label in s for s in female), len(female), sum(label in s for s in male), len(male)),
                )
            )
        label, gap, interval = max(gaps, key=lambda g: g[1])
        summary["gender_label_gap"] = gap
        checks.append(
            check(
                "gender_label_gap",
                gap,
                max_value=cfg.max_gender_label_gap,
                interval=interval,
                n=len(male) + len(female),
                description="largest gap in a label's share between training texts with female and male terms "
                f"({label})",
            )
        )
    else:
        checks.append(
            check(
                "gender_label_gap",
                None,
                max_value=cfg.max_gender_label_gap,
                n=len(male) + len(female),
                description=f"fewer than min_mentions={cfg.min_mentions} training texts mention female or male terms",
            )
        )
    tested = [r for r in mentions if r["examples"] >= cfg.min_mentions]
    summary.update(
        {
            "leaked": float(leaked_count),
            "groups_mentioned": float(len(mentions)),
            "skewed_groups": float(sum(r["p_value"] < 0.01 / max(len(tested), 1) for r in tested)),
        }
    )
    tables = {
        "representation": representation,
        "lengths": lengths,
        "leakage": leaks[: cfg.listed],
        "protected_mentions": mentions[: cfg.listed],
    }
    return AuditResult(summary, checks, tables)
