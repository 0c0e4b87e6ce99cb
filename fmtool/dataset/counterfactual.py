"""Counterfactual rewrites: the same text with a protected attribute's words swapped for their counterparts.

Gendered words and pronouns both ways, first names to the other gender of the same origin or the same gender of
every other origin, nationalities, religions; whole words, case kept, word for word so NER tags stay aligned.
The bias audit measures how predictions move under them; dataset.augment trains on them.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

from fmtool.dataset.examples import Example, TokenExample
from fmtool.dataset.lexicons import first_names, swap_pairs
from fmtool.dataset.perturb import Perturbation, match_case, per_word, perturb
from fmtool.errors import FmtoolError

_WORD = re.compile(r"[^\W\d_]+(?:[-'][^\W\d_]+)*")
ATTRIBUTES = ("gender", "first_name_gender", "first_name_origin", "nationality", "religion")


def counterfactual_groups(
    attributes: Sequence[str], *, swaps: Optional[str] = None, names_file: Optional[str] = None, key: str = "audit.bias"
) -> dict[str, dict[str, tuple[str, ...]]]:
    """attribute -> {lower-case term: the tuple of interchangeable terms it belongs to}."""
    names = first_names(names_file, f"{key}.first_names")
    genders = list(names)
    origins = list(names[genders[0]])
    groups: dict[str, list[tuple[str, ...]]] = {
        attribute: pairs for attribute, pairs in swap_pairs(swaps, f"{key}.swaps").items()
    }
    groups["first_name_gender"] = [
        tuple(names[g][o][i] for g in genders) for o in origins for i in range(len(names[genders[0]][o]))
    ]
    groups["first_name_origin"] = [
        tuple(names[g][o][i] for o in origins) for g in genders for i in range(len(names[g][origins[0]]))
    ]
    unknown = sorted(set(attributes) - set(groups))
    if unknown:
        raise FmtoolError(
            f"{key}.attributes: unknown attribute(s) {', '.join(unknown)}; choose from: {', '.join(sorted(groups))}"
        )
    return {a: {term.lower(): tuple(g) for g in groups[a] for term in g} for a in attributes}


def _variant(word: str, lookup: dict[str, tuple[str, ...]], shift: int) -> str:
    group = lookup.get(word.lower())
    if group is None:
        return word
    position = [t.lower() for t in group].index(word.lower())
    return match_case(word, group[(position + shift) % len(group)])


def _swap(lookup: dict[str, tuple[str, ...]], shift: int) -> Perturbation:
    """Every protected term moved `shift` places along its group, inside words of any punctuation."""
    return Perturbation(
        f"swap_{shift}", per_word(lambda word, rng: _WORD.sub(lambda m: _variant(m.group(), lookup, shift), word))
    )


def counterfactuals(example: Example, lookup: dict[str, tuple[str, ...]]) -> list[Example]:
    """Every rewrite of `example` with each protected term moved k places along its group (k = 1..)."""
    words = example.tokens if isinstance(example, TokenExample) else _WORD.findall(example.text)
    sizes = [len(lookup[w.lower()]) for w in words if w.lower() in lookup]
    return [perturb(example, _swap(lookup, shift)) for shift in range(1, max(sizes, default=1))]
