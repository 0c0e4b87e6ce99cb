"""Texts (and text pairs) -> model inputs for sequence classification."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from fmtool.dataset.examples import TOKENIZE_CHUNK, TextExample


@dataclass
class TextFeature:
    input_ids: list[int]
    token_type_ids: Optional[list[int]]
    label: Optional[int]
    example_index: int


def encode_texts(
    examples: Sequence[TextExample], tokenizer, label2id: Optional[dict[str, int]], *, max_length: int
) -> list[TextFeature]:
    """Tokenise the texts in chunks; inputs longer than max_length are truncated (longest first)."""
    features = []
    for first in range(0, len(examples), TOKENIZE_CHUNK):
        chunk = examples[first : first + TOKENIZE_CHUNK]
        pairs = [e.text_pair for e in chunk] if chunk[0].text_pair is not None else None
        encoded = tokenizer([e.text for e in chunk], pairs, truncation=True, max_length=max_length)
        type_ids = encoded.get("token_type_ids") if pairs is not None else None
        features += [
            TextFeature(
                input_ids=encoded["input_ids"][i],
                token_type_ids=None if type_ids is None else type_ids[i],
                label=None if label2id is None else label2id[e.label],
                example_index=first + i,
            )
            for i, e in enumerate(chunk)
        ]
    return features
