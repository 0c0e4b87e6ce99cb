"""The in-memory records every reader produces and every later stage consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Union

import regex
from seqeval.metrics.sequence_labeling import get_entities

# examples per tokenizer call when encoding: the fast tokenizer's Encoding objects for a whole corpus at once
# would cost more memory than training itself
TOKENIZE_CHUNK = 1024

# the label of a position the loss skips (padding, a word's later sub-tokens, unmasked words in masked-LM):
# torch's cross_entropy default, which Hugging Face models use
IGNORE_INDEX = -100


def labelled_positions(labels):
    """How many positions a batch's loss averages over, when the model reads its labels unshifted (a tensor)."""
    return labels.ne(IGNORE_INDEX).sum()


# words and single punctuation marks, like CoNLL tokenisation ("U.S." stays one word, "(" does not); combining
# marks (\p{M}: accents in NFD text, Indic vowel signs and viramas) stay with their letter, so no word is cut
_WORD = regex.compile(r"(?:[^\W\d_]\p{M}*\.){2,}|[\w\p{M}]+(?:[.'’\-][\w\p{M}]+)*|[^\w\s\p{M}]\p{M}*")


@dataclass(frozen=True)
class TokenExample:
    """One sentence for NER: words and their IOB2 tags."""

    id: str
    tokens: list[str]
    tags: list[str]


@dataclass(frozen=True)
class TextExample:
    """One classification input; `meta` keeps the file's other columns (e.g. sensitive attributes)."""

    id: str
    text: str
    label: str
    text_pair: Optional[str] = None
    meta: dict[str, Any] = field(default_factory=dict)


Example = Union[TokenExample, TextExample]


def to_record(example: Example) -> dict[str, Any]:
    if isinstance(example, TokenExample):
        return {"id": example.id, "tokens": example.tokens, "tags": example.tags}
    record = {"id": example.id, "text": example.text, "label": example.label}
    if example.text_pair is not None:
        record["text_pair"] = example.text_pair
    if example.meta:
        record["meta"] = example.meta
    return record


def from_record(record: dict[str, Any]) -> Example:
    if "tokens" in record:
        return TokenExample(id=record["id"], tokens=record["tokens"], tags=record["tags"])
    return TextExample(
        id=record["id"],
        text=record["text"],
        label=record["label"],
        text_pair=record.get("text_pair"),
        meta=record.get("meta", {}),
    )


def split_words(text: str) -> list[tuple[str, int, int]]:
    """(word, start, end) character spans of the words and punctuation marks in `text`."""
    return [(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]


def words(example: Example) -> list[str]:
    """An example's words, read the one way every stage reads them: an NER sentence's tokens, or the words and
    punctuation marks of a text and its pair (split_words)."""
    if isinstance(example, TokenExample):
        return list(example.tokens)
    text = example.text if example.text_pair is None else f"{example.text} {example.text_pair}"
    return [word for word, _, _ in split_words(text)]


def label_kinds(example: Example) -> set[str]:
    """The labels an example carries: its entity types ({"O"} when it has none), or its label."""
    if isinstance(example, TokenExample):
        return {kind for kind, _, _ in get_entities(list(example.tags))} or {"O"}
    return {example.label}
