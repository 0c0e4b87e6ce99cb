"""Counterfactual rewrites: the same text with a protected attribute's words swapped for their counterparts.

Gendered words and pronouns both ways, first names to the other gender of the same origin or the same gender of
every other origin, nationalities, religions; whole words, case kept, word for word so NER tags stay aligned.
The bias audit measures how predictions move under them; dataset.augment trains on them.

A rewrite must stay a valid sentence of the same shape, or a changed prediction says nothing about the attribute.
In a tagged sentence (NER) a first name is swapped only where it is one: where every tagging given (the gold tags,
the model's) marks it as the first word of a person entity (`Mushtaq` of `Mushtaq Ahmed`, or a one-word person the
lexicon knows as a first name), never inside one (`Ahmed`, a surname there, stays; `Mushtaq Brad` is no name a person
has); any other term only where it stands alone: a one-word entity of a type
other than person (`German` as MISC, `Britain` as LOC) or a word outside every entity that does not border one (so
`Queen` in `Queen Elizabeth I`, whose swap would move the person's boundary, stays). `SAN DIEGO`, `Kenya` as a
country, `English` inside an organisation's name and `European` of `European Tour` are left alone.

First names also have *peers*: the other names of the same gender and origin. Rewriting a name to a peer changes
the words without changing the group, so the flips it causes measure the model's instability under any edit; the
bias audit compares the counterfactual flips against them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence

from fmtool.dataset.examples import Example, TokenExample
from fmtool.dataset.lexicons import first_names, swap_pairs
from fmtool.dataset.perturb import Perturbation, Segment, match_case, perturb
from fmtool.dataset.tags import is_person_type
from fmtool.errors import FmtoolError

# hyphenated names are one word (Min-ji); a possessive's name is a word of its own (Maria's)
_WORD = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*")
ATTRIBUTES = ("gender", "first_name_gender", "first_name_origin", "nationality", "religion")
_NAME_ATTRIBUTES = ("first_name_gender", "first_name_origin")

Lookup = dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class Swaps:
    """One attribute's lexicon: each lower-case term's group of interchangeable terms (a rewrite moves a term along
    its group); for first names also each name's peers (same gender and origin)."""

    counterparts: Lookup
    peers: Optional[Lookup] = None

    @property
    def person_names(self) -> bool:
        return self.peers is not None


def counterfactual_groups(
    attributes: Sequence[str], *, swaps: Optional[str] = None, names_file: Optional[str] = None, key: str = "audit.bias"
) -> dict[str, Swaps]:
    """attribute -> its Swaps, for each attribute asked for."""
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
    peers = _lookup(tuple(listed) for origins_of in names.values() for listed in origins_of.values())
    return {a: Swaps(_lookup(groups[a]), peers if a in _NAME_ATTRIBUTES else None) for a in attributes}


def _lookup(groups) -> Lookup:
    return {term.lower(): tuple(group) for group in groups for term in group}


def _kind(tag: str) -> Optional[str]:
    return None if tag == "O" else tag[2:]


def _stands_alone(tags: Sequence[str], i: int) -> bool:
    """A one-word entity that is not a person, or a word outside entities with no entity beside it."""
    after = tags[i + 1] if i + 1 < len(tags) else "O"
    if tags[i] == "O":
        before = tags[i - 1] if i else "O"
        return before == "O" and after == "O"
    return tags[i].startswith("B-") and not after.startswith("I-") and not is_person_type(tags[i][2:])


# why a lexicon term was left alone: the rules of the module docstring, named for the bias audit's table
INSIDE_PERSON, NOT_A_PERSON, NOT_ALONE = "inside_a_person", "not_a_person", "not_alone"


def _skipped_by(tags: Sequence[str], i: int, names: bool) -> Optional[str]:
    """The rule that keeps position i of one tagging from being swapped, or None when it may be."""
    if not names:
        return None if _stands_alone(tags, i) else NOT_ALONE
    kind = _kind(tags[i])
    if kind is None or not is_person_type(kind):
        return NOT_A_PERSON
    return None if tags[i].startswith("B-") else INSIDE_PERSON


def skipped(words: Sequence[str], swaps: Swaps, taggings: Sequence[Sequence[str]] = ()) -> dict[str, int]:
    """How many lexicon terms of `words` each rule keeps from being swapped."""
    counts: dict[str, int] = {}
    for i, word in enumerate(words):
        if word.lower() in swaps.counterparts:
            rule = next((r for tags in taggings if (r := _skipped_by(tags, i, swaps.person_names))), None)
            if rule is not None:
                counts[rule] = counts.get(rule, 0) + 1
    return counts


def swappable(words: Sequence[str], swaps: Swaps, taggings: Sequence[Sequence[str]] = ()) -> list[int]:
    """The positions of `words` whose term may be swapped, given the taggings of the sentence (module docstring)."""
    return [
        i
        for i, word in enumerate(words)
        if word.lower() in swaps.counterparts
        and all(_skipped_by(tags, i, swaps.person_names) is None for tags in taggings)
    ]


def _moved(word: str, lookup: Lookup, shift: int) -> str:
    group = lookup.get(word.lower())
    if group is None:
        return word
    position = [t.lower() for t in group].index(word.lower())
    return match_case(word, group[(position + shift) % len(group)])


def _rewrite(example: Example, lookup: Lookup, shift: int, positions: Optional[list[int]]) -> Example:
    """Every term at `positions` (text: every term, inside words of any punctuation) moved `shift` places."""
    if positions is None:
        return perturb(
            example,
            Perturbation(
                f"swap_{shift}",
                lambda words, tags, rng: [
                    Segment((_WORD.sub(lambda m: _moved(m.group(), lookup, shift), w),), i) for i, w in enumerate(words)
                ],
            ),
        )
    tokens = [_moved(w, lookup, shift) if i in positions else w for i, w in enumerate(example.tokens)]
    return TokenExample(example.id, tokens, list(example.tags))


def words_of(example: Example) -> list[str]:
    """The words a rewrite looks at: a sentence's tokens, or the words of a text (and its pair)."""
    if isinstance(example, TokenExample):
        return list(example.tokens)
    return _WORD.findall(example.text + " " + (example.text_pair or ""))


def _positions(example: Example, swaps: Swaps, taggings: Sequence[Sequence[str]]) -> tuple[Optional[list[int]], int]:
    """(where to swap: None for every term of a text; how many rewrites: the largest group met, less one)."""
    if isinstance(example, TokenExample):
        positions = swappable(example.tokens, swaps, [example.tags, *taggings])
        words = [example.tokens[i] for i in positions]
    else:
        positions, words = None, words_of(example)
    sizes = [len(swaps.counterparts[w.lower()]) for w in words if w.lower() in swaps.counterparts]
    return positions, max(sizes, default=1) - 1


def counterfactuals(example: Example, swaps: Swaps, taggings: Sequence[Sequence[str]] = ()) -> list[Example]:
    """Every rewrite of `example` with each swappable term moved k places along its group (k = 1..); a tagged
    example's own tags always count among the taggings."""
    positions, count = _positions(example, swaps, taggings)
    if positions == []:
        return []
    return [_rewrite(example, swaps.counterparts, shift, positions) for shift in range(1, count + 1)]


def peer_rewrites(example: Example, swaps: Swaps, taggings: Sequence[Sequence[str]] = ()) -> list[Example]:
    """As many rewrites as `counterfactuals` gives, each moving every name to a peer of the same gender and origin
    instead (empty for attributes without peers)."""
    if swaps.peers is None:
        return []
    positions, count = _positions(example, swaps, taggings)
    if positions == []:
        return []
    return [_rewrite(example, swaps.peers, shift, positions) for shift in range(1, count + 1)]
