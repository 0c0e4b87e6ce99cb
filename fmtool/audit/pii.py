"""Personal data in the run's data: what a model trained on it may repeat, and what its run directory holds.

Every saved split is scanned with fmtool/dataset/pii.py (Presidio's checksum-validated recognizers, phone
numbers parsed per region, credentials in URLs, API keys). Person names: a labelled NER split's gold person
entities (`person_types`) count as they are; in text, an NER model finds them: `person_model` names a fmtool
NER run. Where an NER run has a person type, its own predictions on the held-out splits are compared with the
gold tags and their precision reported (a name detector's false positives are what its users complain about
most). Names are counted and listed but
only the types in `fail_on` fail the check (a news corpus for NER is made of names).

The report never holds a detected value: examples are shown with every detection replaced by its type.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from seqeval.metrics.sequence_labeling import get_entities

from fmtool.audit.base import AuditContext, AuditResult, check, check_splits, register
from fmtool.config.schema import ranged
from fmtool.dataset.examples import Example, TokenExample
from fmtool.dataset.pii import PATTERN_TYPES, PiiScanner, PiiSpan, redact_text, text_of
from fmtool.dataset.tags import PERSON_TYPES, is_person_type
from fmtool.errors import FmtoolError

_KEY = "audit.pii"
PERSON = "PERSON"


@dataclass
class PiiConfig:
    splits: Optional[List[str]] = None  # null: every split saved in the run
    types: List[str] = field(default_factory=lambda: [*PATTERN_TYPES, PERSON])
    fail_on: List[str] = field(default_factory=lambda: list(PATTERN_TYPES))
    min_score: float = ranged(0.4, low=0, high=1)  # Presidio's confidence; its phone numbers score 0.4
    thresholds: Dict[str, float] = field(default_factory=dict)  # per type, e.g. {IP_ADDRESS: 0.6}
    phone_regions: List[str] = field(default_factory=lambda: ["US", "GB", "DE", "FR", "IN", "CA"])
    allow_list: List[str] = field(default_factory=list)  # values that are not personal (a support address, a test card)
    max_examples_with_pii: int = ranged(0, low=0)  # per split, counting the fail_on types
    person_types: List[str] = field(default_factory=lambda: list(PERSON_TYPES))  # in any case
    person_model: Optional[str] = None  # a fmtool NER run directory whose person entities count as names
    listed: int = ranged(10, low=0)

    def __post_init__(self) -> None:
        known = (*PATTERN_TYPES, PERSON)
        unknown = [t for t in (*self.types, *self.fail_on, *self.thresholds) if t not in known]
        if unknown:
            raise FmtoolError(f"{_KEY}: unknown PII type '{unknown[0]}'; choose from: {', '.join(known)}")


def _word_spans(tokens: Sequence[str], first: int, last: int, kind: str) -> PiiSpan:
    start = sum(len(t) + 1 for t in tokens[:first])
    end = start + len(" ".join(tokens[first : last + 1]))
    return PiiSpan(kind, start, end, 1.0)


def _person_spans(example: Example, tags: Sequence[str], person_types: Sequence[str]) -> list[PiiSpan]:
    return [
        _word_spans(example.tokens, first, last, PERSON)
        for kind, first, last in get_entities(list(tags))
        if is_person_type(kind, person_types)
    ]


class _NameFinder:
    """Person names from an NER model's predictions: the audited run's own, or `person_model`'s."""

    def __init__(self, ctx: AuditContext, cfg: PiiConfig) -> None:
        self.person_types = list(cfg.person_types)
        self.predict = None
        if cfg.person_model is not None:
            if ctx.open_run is None:
                raise FmtoolError(f"{_KEY}.person_model: this audit cannot load another run")
            other = ctx.open_run(cfg.person_model)
            if not other.task.labels_each_word:
                raise FmtoolError(
                    f"{_KEY}.person_model: {cfg.person_model} is a {other.task.name} run; names need an NER run"
                )
            self.predict, labels = other.predictions, other.labels
        elif ctx.task.labels_each_word:
            self.predict, labels = ctx.predict, ctx.labels
        else:
            labels = []
        if not any(is_person_type(label[2:], self.person_types) for label in labels):
            self.predict = None

    @property
    def available(self) -> bool:
        return self.predict is not None

    def spans(self, examples: Sequence[Example]) -> list[list[PiiSpan]]:
        """Predicted person names with their character offsets in text_of(example)."""
        from fmtool.dataset.examples import split_words

        if self.predict is None:
            return [[] for _ in examples]
        if examples and isinstance(examples[0], TokenExample):
            return [_person_spans(e, p.tags, self.person_types) for e, p in zip(examples, self.predict(examples))]
        words = [split_words(text_of(e)) for e in examples]
        sentences = [
            TokenExample(id=e.id, tokens=[w for w, _, _ in ws], tags=["O"] * len(ws)) for e, ws in zip(examples, words)
        ]
        return [
            [
                PiiSpan(PERSON, ws[first][1], ws[last][2], 1.0)
                for kind, first, last in get_entities(list(p.tags))
                if is_person_type(kind, self.person_types)
            ]
            for ws, p in zip(words, self.predict(sentences))
        ]


def _precision(
    examples: Sequence[TokenExample], found: Sequence[list[PiiSpan]], person_types: Sequence[str]
) -> tuple[int, int]:
    """Detected names that are gold person entities, and all detected names."""
    hits = total = 0
    for example, names in zip(examples, found):
        gold = {(s.start, s.end) for s in _person_spans(example, example.tags, person_types)}
        total += len(names)
        hits += sum((s.start, s.end) in gold for s in names)
    return hits, total


def _names(
    split: str, examples: Sequence[Example], names: _NameFinder
) -> tuple[list[list[PiiSpan]], Optional[tuple[int, int]]]:
    """Person names per example, and (hits, detections) of the name model where gold tags can judge it.

    A labelled NER split names its people already: its gold tags count, and the model is run on held-out splits
    only, to measure its precision against them."""
    if examples and isinstance(examples[0], TokenExample):
        gold = [_person_spans(e, e.tags, names.person_types) for e in examples]
        judged = (
            _precision(examples, names.spans(examples), names.person_types)
            if names.available and split != "train"
            else None
        )
        return gold, judged
    return names.spans(examples), None


def _scan_split(
    name: str, examples: Sequence[Example], scanner: PiiScanner, names: _NameFinder, cfg: PiiConfig
) -> dict[str, Any]:
    person, precision = _names(name, examples, names) if PERSON in cfg.types else ([[] for _ in examples], None)
    counts: Counter = Counter()
    flagged, listed = 0, []
    texts = [text_of(e) for e in examples]
    for example, text, person_spans, spans in zip(examples, texts, person, scanner.scan_all(texts)):
        spans += [p for p in person_spans if all(p.end <= s.start or p.start >= s.end for s in spans)]
        counts.update(s.kind for s in spans)
        if any(s.kind in cfg.fail_on for s in spans):
            flagged += 1
            if len(listed) < cfg.listed:
                listed.append(
                    {
                        "split": name,
                        "id": example.id,
                        "types": ", ".join(sorted({s.kind for s in spans})),
                        "redacted": redact_text(text, spans)[:300],
                    }
                )
    return {"counts": counts, "flagged": flagged, "listed": listed, "person_precision": precision}


@register(
    "pii",
    version=1,
    config_type=PiiConfig,
    description="personal data (e-mail, phone, cards, IBAN, IP, SSN, credentials, secrets, names) in the run's splits",
)
def run(ctx: AuditContext, cfg: PiiConfig) -> AuditResult:
    splits = cfg.splits if cfg.splits is not None else list(ctx.available_splits)
    check_splits(ctx, splits, _KEY)
    scanner = PiiScanner(
        [t for t in cfg.types if t != PERSON],
        min_score=cfg.min_score,
        thresholds=cfg.thresholds,
        phone_regions=cfg.phone_regions,
        allow_list=cfg.allow_list,
        key=_KEY,
    )
    names = _NameFinder(ctx, cfg)
    summary: dict[str, float] = {}
    checks, findings, rows, warnings = [], [], [], []
    for split in splits:
        examples = ctx.load_split(split)
        scanned = _scan_split(split, examples, scanner, names, cfg)
        summary[f"{split}.examples"] = float(len(examples))
        summary[f"{split}.examples_with_pii"] = float(scanned["flagged"])
        for kind in cfg.types:
            summary[f"{split}.{kind}"] = float(scanned["counts"].get(kind, 0))
        rows.append(
            {
                "split": split,
                "examples": len(examples),
                "examples_with_pii": scanned["flagged"],
                **{k: scanned["counts"].get(k, 0) for k in cfg.types},
            }
        )
        if scanned["person_precision"] is not None and scanned["person_precision"][1]:
            hits, total = scanned["person_precision"]
            summary[f"{split}.person_precision"] = hits / total
        checks.append(
            check(
                f"{split}.examples_with_pii",
                scanned["flagged"],
                max_value=cfg.max_examples_with_pii,
                description=f"examples of {split} holding {', '.join(cfg.fail_on)} (all {len(examples)} scanned)",
            )
        )
        findings += scanned["listed"]
    if PERSON in cfg.types and not names.available and not ctx.task.labels_each_word:
        warnings.append(
            "person names not scanned: the run is no NER model with a person type; set audit.pii.person_model to "
            "an NER run"
        )
    return AuditResult(summary=summary, checks=checks, tables={"counts": rows, "examples": findings}, warnings=warnings)
