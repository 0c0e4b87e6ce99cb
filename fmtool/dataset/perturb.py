"""Seeded word-level edits of examples, with NER tags kept aligned: one module for the robustness audit,
the bias audit's counterfactual swaps and training-time augmentation.

An edit maps the example's words to *segments*: each original word becomes zero or more words (a typo keeps
one word, inserted whitespace splits it in two, a contraction merges two), and new words may be inserted.
Tags follow the words: the first word made from an original word takes its tag, further pieces continue the
entity (B-PER split in two gives B-PER I-PER), inserted words are O, and the result is repaired to valid IOB2
(an I- after a deleted B- becomes B-). Classification text is edited the same way on its whitespace-separated
words, keeping the original spacing elsewhere.

Every perturbation draws from `random.Random(f"{seed}:{name}:{example id}")`, so an example's edit is the
same in every run and independent of the other examples (HELM's rule).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace
from typing import Callable, Optional, Sequence

from seqeval.metrics.sequence_labeling import get_entities

from fmtool.dataset.examples import Example, TokenExample


@dataclass(frozen=True)
class Segment:
    """Words an edit produced; `source` is the index of the original word they come from (None: inserted)."""

    words: tuple[str, ...]
    source: Optional[int]


Edit = Callable[[list[str], list[str], random.Random], list[Segment]]


@dataclass(frozen=True)
class Perturbation:
    """A named edit: edit(words, tags, rng) -> segments; tags are IOB2 for NER and all "O" for text."""

    name: str
    edit: Edit


def per_word(change: Callable[[str, random.Random], str]) -> Edit:
    """An edit that rewrites words one by one; a result with spaces becomes several words, an empty one deletes."""

    def edit(words: list[str], tags: list[str], rng: random.Random) -> list[Segment]:
        return [Segment(tuple(change(w, rng).split(" ")), i) for i, w in enumerate(words)]

    return edit


def match_case(template: str, word: str) -> str:
    """`word` in the case of `template`: UPPER, Capitalised or lower."""
    if template.isupper() and len(template) > 1:
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word.lower()


def unchanged(words: Sequence[str]) -> list[Segment]:
    return [Segment((w,), i) for i, w in enumerate(words)]


def realign_tags(segments: Sequence[Segment], tags: Sequence[str]) -> list[str]:
    """Tags for the edited words (see the module docstring), repaired to valid IOB2."""
    out: list[str] = []
    for segment in segments:
        tag = "O" if segment.source is None else tags[segment.source]
        for k in range(len(segment.words)):
            out.append(tag if k == 0 or tag == "O" else "I-" + tag[2:])
    return repair_iob2(out)


def repair_iob2(tags: Sequence[str]) -> list[str]:
    """An I-X that does not continue an X entity starts one: B-X."""
    repaired = []
    for i, tag in enumerate(tags):
        previous = repaired[i - 1] if i else "O"
        if tag.startswith("I-") and (previous == "O" or previous[2:] != tag[2:]):
            tag = "B-" + tag[2:]
        repaired.append(tag)
    return repaired


_SPACE = re.compile(r"\S+")


def _edit_text(text: str, edit: Edit, rng: random.Random) -> str:
    spans = [(m.start(), m.end()) for m in _SPACE.finditer(text)]
    words = [text[a:b] for a, b in spans]
    pieces, cursor = [], 0
    for segment in edit(words, ["O"] * len(words), rng):
        if segment.source is None:
            pieces.append(" " + " ".join(segment.words))
            continue
        start, end = spans[segment.source]
        gap = text[cursor:start]
        pieces.append((gap if segment.words or not pieces else "") + " ".join(segment.words))
        cursor = end
    return ("".join(pieces) + text[cursor:]).strip() if spans else text


def _rng(example: Example, perturbation: Perturbation, seed: int) -> random.Random:
    return random.Random(f"{seed}:{perturbation.name}:{example.id}")


def perturb_aligned(
    example: TokenExample, perturbation: Perturbation, seed: int = 0
) -> tuple[TokenExample, list[list[int]]]:
    """The edited sentence and, per original word, the positions of the words it became (empty: deleted)."""
    segments = [
        s
        for s in perturbation.edit(list(example.tokens), list(example.tags), _rng(example, perturbation, seed))
        if s.words
    ]
    tokens: list[str] = []
    positions: list[list[int]] = [[] for _ in example.tokens]
    for segment in segments:
        if segment.source is not None:
            positions[segment.source].extend(range(len(tokens), len(tokens) + len(segment.words)))
        tokens.extend(segment.words)
    return replace(example, tokens=tokens, tags=realign_tags(segments, example.tags)), positions


def carried_entities(tags: Sequence[str], positions: list[list[int]]) -> set[tuple[str, int, int]]:
    """The entities of `tags` with their spans carried through an edit (entities whose words all went are gone)."""
    out = set()
    for kind, first, last in get_entities(list(tags)):
        moved = [q for i in range(first, last + 1) for q in positions[i]]
        if moved:
            out.add((kind, min(moved), max(moved)))
    return out


def perturb(example: Example, perturbation: Perturbation, seed: int = 0) -> Example:
    """`example` edited by `perturbation`, seeded by (seed, perturbation, example id)."""
    if isinstance(example, TokenExample):
        return perturb_aligned(example, perturbation, seed)[0]
    rng = _rng(example, perturbation, seed)
    changed = replace(example, text=_edit_text(example.text, perturbation.edit, rng))
    if example.text_pair is not None:
        changed = replace(changed, text_pair=_edit_text(example.text_pair, perturbation.edit, rng))
    return changed
