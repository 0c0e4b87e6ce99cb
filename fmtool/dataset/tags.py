"""Entity tag schemes: detect IOB1 / IOB2 / BIOES and normalise everything to IOB2."""

from __future__ import annotations

from typing import Sequence

from fmtool.errors import FmtoolError

_BAD_TAG = "tag '{0}' is neither 'O' nor PREFIX-TYPE with PREFIX in B, I, E, S"
# the entity type of people as corpora name it, in any case: CoNLL-2003's PER, OntoNotes' PERSON, WNUT-17's person
PERSON_TYPES = ("PER", "PERSON")


def is_person_type(kind: str, names: Sequence[str] = PERSON_TYPES) -> bool:
    return kind.casefold() in {name.casefold() for name in names}


def person_type(labels: Sequence[str]) -> str | None:
    """The entity type of people among a model's IOB2 labels, if it has one."""
    return next((label[2:] for label in labels if label.startswith("B-") and is_person_type(label[2:])), None)


def check_tag(tag: str) -> None:
    if tag != "O" and (len(tag) < 3 or tag[1] != "-" or tag[0] not in "BIES"):
        raise ValueError(_BAD_TAG.format(tag))


def detect_scheme(sentences: Sequence[Sequence[str]]) -> str:
    """bioes if E-/S- tags occur; iob1 if an entity ever opens with I-; iob2 otherwise."""
    opens_with_inside = False
    for tags in sentences:
        previous = "O"
        for tag in tags:
            if tag[:2] in ("E-", "S-"):
                return "bioes"
            if tag.startswith("I-") and (previous == "O" or previous[2:] != tag[2:]):
                opens_with_inside = True
            previous = tag
    return "iob1" if opens_with_inside else "iob2"


def to_iob2(tags: Sequence[str], scheme: str) -> list[str]:
    """Rewrite one sentence's tags from `scheme` into IOB2 (entities always open with B-)."""
    if scheme == "iob2":
        return list(tags)
    if scheme == "bioes":
        return ["B-" + t[2:] if t[:2] == "S-" else "I-" + t[2:] if t[:2] == "E-" else t for t in tags]
    if scheme == "iob1":
        out, previous = [], "O"
        for tag in tags:
            if tag.startswith("I-") and (previous == "O" or previous[2:] != tag[2:]):
                tag = "B-" + tag[2:]
            out.append(tag)
            previous = tag
        return out
    raise FmtoolError(f"dataset.tag_scheme='{scheme}' is not known; choose one of: auto, iob1, iob2, bioes")
