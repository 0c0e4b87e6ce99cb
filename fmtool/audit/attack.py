"""Black-box adversarial attacks under a query budget: how easily do small hostile edits change predictions?

For each held-out example the model gets right, words are ranked by importance (how much the prediction
weakens when the word is deleted; for NER when it is replaced by the unknown token, which keeps the word
alignment), then the most important words are changed one at a time, greedily keeping the edit that weakens the
prediction most, until the prediction is broken, `max_words_changed` of the words have been changed or the
example's `max_queries` are spent. Edits: `char` (DeepWordBug's: swap two neighbouring letters, substitute,
delete or insert one) and `word` (the word's nearest neighbours in the model's own input-embedding table with
cosine similarity of at least `min_cosine`); stopwords are left alone, and for NER so are entity words unless
`attack_entities` is set. Classification: the attack succeeds when the label changes. NER: when an entity the
model found correctly, outside the changed words, is lost or changes type.

Reported as TextAttack does: original accuracy, accuracy under attack, attack success rate, average share of
words perturbed and average queries, with every attacked example and its adversarial text.

Citations: Gao et al. 2018, "Black-box Generation of Adversarial Text Sequences to Evade Deep Learning
Classifiers" (DeepWordBug); Jin et al. 2020, "Is BERT Really Robust?" (TextFooler); Morris et al. 2020,
"TextAttack".
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field, replace
from typing import Any, List, Optional, Sequence

import numpy as np
import torch
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
from fmtool.dataset.examples import Example, TokenExample
from fmtool.errors import FmtoolError

_KEY = "audit.attack"
_METHODS = ("char", "word")
# NLTK's English stopword list, abridged to the function words an attack must not touch
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers
herself him himself his how i if in into is it its itself just me more most my myself no nor not now of off on
once only or other our ours ourselves out over own same she should so some such than that the their theirs
them themselves then there these they this those through to too under until up very was we were what when
where which while who whom why will with would you your yours yourself yourselves""".split()
)


@dataclass
class AttackConfig:
    data: Optional[str] = None  # a text file, one input per line (classification); null: the run's splits
    splits: List[str] = field(default_factory=lambda: ["validation"])
    methods: List[str] = field(default_factory=lambda: list(_METHODS))
    max_examples: int = ranged(100, low=1)
    max_queries: int = ranged(200, low=1)  # per example, importance ranking included
    max_words_changed: float = ranged(0.2, low=0, high=1, low_open=True)  # share of an example's words (at least one)
    candidates_per_word: int = ranged(8, low=1)
    min_cosine: float = ranged(0.5, low=-1, high=1)
    attack_entities: bool = False
    max_attack_success_rate: float = ranged(0.9, low=0, high=1)

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in _METHODS]
        if unknown or not self.methods:
            raise FmtoolError(
                f"{_KEY}.methods: unknown attack '{unknown[0] if unknown else ''}'; choose from: {', '.join(_METHODS)}"
            )


def char_edits(word: str, rng: random.Random, k: int) -> list[str]:
    """Up to k distinct DeepWordBug edits of `word`: swap two neighbouring letters, substitute, delete or insert one."""
    out: dict[str, None] = {}
    for _ in range(4 * k):
        if len(out) >= k:
            break
        at = rng.randrange(len(word))
        kind = rng.choice(("swap", "substitute", "delete", "insert"))
        if kind == "swap" and len(word) > 1:
            at = min(at, len(word) - 2)
            edit = word[:at] + word[at + 1] + word[at] + word[at + 2 :]
        elif kind == "substitute":
            edit = word[:at] + rng.choice(string.ascii_lowercase) + word[at + 1 :]
        elif kind == "delete" and len(word) > 1:
            edit = word[:at] + word[at + 1 :]
        else:
            edit = word[:at] + rng.choice(string.ascii_lowercase) + word[at:]
        if edit != word:
            out[edit] = None
    return list(out)


class EmbeddingNeighbours:
    """Nearest words of a word in the model's input-embedding table (single-piece words, whole-word tokens only)."""

    def __init__(self, model, tokenizer, k: int, min_cosine: float) -> None:
        table = model.get_input_embeddings().weight.detach().float().cpu()
        self.table = torch.nn.functional.normalize(table, dim=-1)
        self.tokenizer, self.k, self.min_cosine = tokenizer, k, min_cosine
        vocabulary = tokenizer.convert_ids_to_tokens(list(range(len(table))))
        special = set(tokenizer.all_special_ids)
        self.usable = torch.tensor(
            [i not in special and t.isalpha() and not t.startswith("##") for i, t in enumerate(vocabulary)]
        )
        self.cache: dict[str, list[str]] = {}

    def __call__(self, word: str) -> list[str]:
        key = word.lower()
        if key not in self.cache:
            ids = self.tokenizer(key, add_special_tokens=False)["input_ids"]
            if len(ids) != 1:
                self.cache[key] = []
            else:
                similarity = self.table @ self.table[ids[0]]
                similarity[~self.usable] = -1.0
                similarity[ids[0]] = -1.0
                best = similarity.topk(self.k)
                self.cache[key] = [
                    self.tokenizer.convert_ids_to_tokens(int(i))
                    for s, i in zip(best.values, best.indices)
                    if s >= self.min_cosine
                ]
        return [w.capitalize() if word[:1].isupper() else w for w in self.cache[key]]


def _words(example: Example) -> list[str]:
    return list(example.tokens) if isinstance(example, TokenExample) else example.text.split()


def _with_words(example: Example, words: Sequence[str]) -> Example:
    return (
        replace(example, tokens=list(words))
        if isinstance(example, TokenExample)
        else replace(example, text=" ".join(words))
    )


def _correct_entities(example: TokenExample, prediction) -> set[tuple[str, int, int]]:
    return set(get_entities(list(example.tags))) & set(get_entities(list(prediction.tags)))


class _Target:
    """What the attack weakens for one example, and when it has won."""

    def __init__(self, example: Example, prediction) -> None:
        self.example = example
        self.ner = isinstance(example, TokenExample)
        self.keep = _correct_entities(example, prediction) if self.ner else prediction.label

    def strength(self, prediction, changed: set[int]) -> float:
        """Lower is weaker; below 0 the attack has succeeded (NER: kept entities away from the changed words)."""
        if self.ner:
            away = {e for e in self.keep if not any(e[1] <= i <= e[2] for i in changed)}
            held = away & set(get_entities(list(prediction.tags)))
            if held != away:
                return -1.0
            return float(np.mean([prediction.scores[i] for _, a, b in held for i in range(a, b + 1)])) if held else 0.0
        if prediction.label != self.keep:
            return -1.0
        return prediction.probabilities[self.keep]


@dataclass
class _State:
    target: _Target
    words: list[str]
    order: list[int]
    changed: set = field(default_factory=set)
    queries: int = 0
    succeeded: bool = False
    best: float = 1.0


def _attackable(target: _Target, words: Sequence[str], cfg: AttackConfig) -> list[int]:
    protected = (
        {i for i, tag in enumerate(target.example.tags) if tag != "O"}
        if target.ner and not cfg.attack_entities
        else set()
    )
    return [
        i
        for i, w in enumerate(words)
        if w.lower() not in STOPWORDS and any(c.isalpha() for c in w) and i not in protected
    ]


def _importance(ctx: AuditContext, targets: list[_Target], cfg: AttackConfig) -> list[_State]:
    """Each example's attackable words, most important first (one batched pass over all deletions)."""
    unknown = ctx.tokenizer.unk_token or "[UNK]"
    planned, probes = [], []
    for target in targets:
        words = _words(target.example)
        positions = _attackable(target, words, cfg)[: cfg.max_queries]
        planned.append((target, words, positions))
        for i in positions:
            edited = words[:i] + [unknown] + words[i + 1 :] if target.ner else words[:i] + words[i + 1 :]
            probes.append(_with_words(target.example, edited))
    predictions = ctx.predict(probes) if probes else []
    states, cursor = [], 0
    for target, words, positions in planned:
        scores = [target.strength(p, {i}) for i, p in zip(positions, predictions[cursor : cursor + len(positions)])]
        cursor += len(positions)
        order = [i for _, i in sorted(zip(scores, positions))]
        states.append(_State(target, list(words), order, queries=len(positions)))
    return states


def _attack(
    ctx: AuditContext, states: list[_State], cfg: AttackConfig, neighbours: Optional[EmbeddingNeighbours]
) -> None:
    """Greedy substitution in lockstep: every active example changes its next word in one batched pass."""
    step = 0
    while True:
        active = [
            s
            for s in states
            if not s.succeeded
            and step < len(s.order)
            and s.queries < cfg.max_queries
            and len(s.changed) < max(1, int(cfg.max_words_changed * len(s.words)))
        ]
        if not active:
            return
        batch, owners = [], []
        for state in active:
            i = state.order[step]
            rng = random.Random(f"{ctx.seed}:attack:{state.target.example.id}:{i}")
            options = []
            if "char" in cfg.methods:
                options += char_edits(state.words[i], rng, cfg.candidates_per_word)
            if "word" in cfg.methods and neighbours is not None:
                options += neighbours(state.words[i])
            options = options[: cfg.max_queries - state.queries]
            for option in options:
                batch.append(_with_words(state.target.example, state.words[:i] + [option] + state.words[i + 1 :]))
                owners.append((state, i, option))
            state.queries += len(options)
        predictions = ctx.predict(batch) if batch else []
        best: dict[int, tuple[float, int, str]] = {}
        for (state, i, option), prediction in zip(owners, predictions):
            strength = state.target.strength(prediction, state.changed | {i})
            if strength < best.get(id(state), (float("inf"),))[0]:
                best[id(state)] = (strength, i, option)
        for state in active:
            if id(state) in best and best[id(state)][0] < state.best:
                strength, i, option = best[id(state)]
                state.words[i], state.best = option, strength
                state.changed.add(i)
                state.succeeded = strength < 0
        step += 1


@register(
    "attack",
    version=1,
    config_type=AttackConfig,
    description="black-box character- and word-level attacks under a query budget (TextAttack's figures)",
)
def run(ctx: AuditContext, cfg: AttackConfig) -> AuditResult:
    inputs = evaluation_inputs(ctx, data=cfg.data, splits=cfg.splits, key=_KEY)
    inputs = random.Random(f"{ctx.seed}:attack").sample(inputs, min(cfg.max_examples, len(inputs)))
    gold = cfg.data is None
    predictions = ctx.predict(inputs)
    if ctx.task.labels_each_word:
        targets = [_Target(e, p) for e, p in zip(inputs, predictions) if _correct_entities(e, p)]
    else:
        targets = [_Target(e, p) for e, p in zip(inputs, predictions) if not gold or p.label == e.label]
    states = _importance(ctx, targets, cfg)
    neighbours = (
        EmbeddingNeighbours(ctx.model, ctx.tokenizer, cfg.candidates_per_word, cfg.min_cosine)
        if "word" in cfg.methods and ctx.model is not None
        else None
    )
    _attack(ctx, states, cfg, neighbours)
    successes = [s for s in states if s.succeeded]
    original_accuracy = len(targets) / max(len(inputs), 1)
    summary = {
        "examples": float(len(inputs)),
        "attacked": float(len(states)),
        "original_accuracy": original_accuracy,
        "accuracy_under_attack": (len(states) - len(successes)) / max(len(inputs), 1),
        "attack_success_rate": len(successes) / len(states) if states else float("nan"),
        "average_words_perturbed": float(np.mean([len(s.changed) / len(s.words) for s in successes]))
        if successes
        else float("nan"),
        "average_queries": float(np.mean([s.queries for s in states])) if states else float("nan"),
    }
    rows: list[dict[str, Any]] = [
        {
            "id": s.target.example.id,
            "succeeded": s.succeeded,
            "queries": s.queries,
            "words_changed": len(s.changed),
            "original": " ".join(_words(s.target.example)),
            "adversarial": " ".join(s.words),
        }
        for s in states
    ]
    check = rate_check(
        "attack_success_rate",
        len(successes),
        len(states),
        max_value=cfg.max_attack_success_rate,
        description=(
            f"share of correctly handled inputs the attack breaks ({'+'.join(cfg.methods)}, at most {cfg.max_queries} "
            "queries)"
        ),
        # paired comparisons read the inputs both models handled correctly and were attacked on
        items=ItemOutcomes.of([(item_id("attack", *_words(s.target.example)), s.succeeded) for s in states]),
    )
    return AuditResult(summary, [check], {"examples": rows})
