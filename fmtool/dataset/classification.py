"""Texts (and text pairs) -> model inputs for sequence classification."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from fmtool.dataset.examples import TextExample


@dataclass
class TextFeature:
    input_ids: list[int]
    token_type_ids: Optional[list[int]]
    label: Optional[int]
    example_index: int


def encode_texts(examples: Sequence[TextExample], tokenizer, label2id: Optional[dict[str, int]], *, max_length: int) -> list[TextFeature]:
    """Tokenise all texts in one call; inputs longer than max_length are truncated (longest first)."""
    texts = [e.text for e in examples]
    pairs = [e.text_pair for e in examples] if examples and examples[0].text_pair is not None else None
    encoded = tokenizer(texts, pairs, truncation=True, max_length=max_length)
    type_ids = encoded.get("token_type_ids") if pairs is not None else None
    return [
        TextFeature(
            input_ids=encoded["input_ids"][i],
            token_type_ids=None if type_ids is None else type_ids[i],
            label=None if label2id is None else label2id[e.label],
            example_index=i,
        )
        for i, e in enumerate(examples)
    ]
