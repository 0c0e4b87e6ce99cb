"""Words -> sub-token model inputs for NER, with label alignment and overlapping windows.

Labels follow run_ner.py: the first sub-token of a word carries the word's label and the other
sub-tokens get -100 so the loss ignores them (or, with label_all_tokens, the word's label with B-
turned into I-). A sentence longer than the model's window is split into overlapping windows that
start and end on word boundaries; each word is *owned* by the window in which it sits farthest from
an edge, and its prediction is read from that window alone, so every word is scored exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from fmtool.dataset.examples import IGNORE_INDEX, TOKENIZE_CHUNK, TokenExample


@dataclass
class TokenFeature:
    input_ids: list[int]
    labels: Optional[list[int]]
    example_index: int
    # (word index in the sentence, token position in input_ids) for the words this window owns
    owned: list[tuple[int, int]]


def special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a single sequence (BERT: [CLS] and [SEP])."""
    bare = tokenizer("fmtool", add_special_tokens=False)["input_ids"]
    wrapped = tokenizer("fmtool", add_special_tokens=True)["input_ids"]
    start = next(i for i in range(len(wrapped)) if wrapped[i : i + len(bare)] == bare)
    return wrapped[:start], wrapped[start + len(bare) :]


def plan_windows(word_starts: Sequence[int], n_tokens: int, budget: int, stride: int) -> list[tuple[int, int]]:
    """Token spans [start, end) of at most `budget` tokens, cut at word starts, overlapping by ~`stride`.

    Args:
        word_starts: token index at which each word begins (ascending).
        n_tokens: total sub-tokens in the sentence.
        budget: tokens per window, special tokens excluded.
        stride: tokens of left context repeated from the previous window.
    """
    if n_tokens <= budget:
        return [(0, n_tokens)]
    boundaries = sorted(set(word_starts) | {n_tokens})
    spans, start = [], 0
    while True:
        limit = start + budget
        if limit >= n_tokens:
            spans.append((start, n_tokens))
            return spans
        cuts = [b for b in boundaries if start < b <= limit]
        # one word longer than the whole budget has to be cut inside the word
        end = cuts[-1] if cuts else limit
        spans.append((start, end))
        restarts = [b for b in boundaries if start < b <= end and b >= end - stride]
        start = restarts[0] if restarts and restarts[0] < end else end


def _owner_of(position: int, spans: list[tuple[int, int]]) -> int:
    best, best_margin = 0, -1
    for index, (start, end) in enumerate(spans):
        if start <= position < end:
            margin = min(position - start, end - 1 - position)
            if margin > best_margin:
                best, best_margin = index, margin
    return best


def encode_ner(
    examples: Sequence[TokenExample],
    tokenizer,
    label2id: Optional[dict[str, int]],
    *,
    max_length: int,
    stride: int,
    label_all_tokens: bool = False,
) -> list[TokenFeature]:
    """Tokenise every sentence once and return its windows; label2id=None encodes without labels."""
    prefix, suffix = special_tokens(tokenizer)
    budget = max_length - len(prefix) - len(suffix)
    stride = min(stride, budget // 2)
    features: list[TokenFeature] = []
    for first in range(0, len(examples), TOKENIZE_CHUNK):
        chunk = examples[first : first + TOKENIZE_CHUNK]
        encoded = tokenizer([list(e.tokens) for e in chunk], is_split_into_words=True, add_special_tokens=False)
        for offset, example in enumerate(chunk):
            ids, word_ids = encoded["input_ids"][offset], encoded.word_ids(offset)
            if len({w for w in word_ids if w is not None}) < len(example.tokens):
                ids, word_ids = _unknown_for_empty_words(example.tokens, word_ids, tokenizer)
            features += _windows(
                first + offset, example, ids, word_ids, prefix, suffix, budget, stride, label2id, label_all_tokens
            )
    return features


def _unknown_for_empty_words(
    words: Sequence[str], word_ids: list[Optional[int]], tokenizer
) -> tuple[list[int], list[Optional[int]]]:
    """A word the tokenizer turns into nothing (a lone combining mark, a zero-width space) becomes its unknown
    token, so it still gets a position, a label and a prediction."""
    present = {w for w in word_ids if w is not None}
    words = [word if index in present else tokenizer.unk_token for index, word in enumerate(words)]
    encoded = tokenizer([words], is_split_into_words=True, add_special_tokens=False)
    return encoded["input_ids"][0], encoded.word_ids(0)


def _windows(
    index: int,
    example: TokenExample,
    ids: list[int],
    word_ids: list[Optional[int]],
    prefix: list[int],
    suffix: list[int],
    budget: int,
    stride: int,
    label2id: Optional[dict[str, int]],
    label_all_tokens: bool,
) -> list[TokenFeature]:
    """One sentence's windows, each word owned by exactly one of them."""
    before, after = len(prefix), len(suffix)
    features = []
    word_starts = [p for p, w in enumerate(word_ids) if w is not None and (p == 0 or word_ids[p - 1] != w)]
    spans = plan_windows(word_starts, len(ids), budget, stride)
    owners = {word_ids[p]: _owner_of(p, spans) for p in word_starts}
    token_labels = _token_labels(word_ids, example.tags, label2id, label_all_tokens) if label2id else None
    for span_index, (start, end) in enumerate(spans):
        window = prefix + ids[start:end] + suffix
        labels = None
        if token_labels is not None:
            labels = [IGNORE_INDEX] * before + token_labels[start:end] + [IGNORE_INDEX] * after
        owned = [
            (word_ids[p], p - start + before)
            for p in word_starts
            if start <= p < end and owners[word_ids[p]] == span_index
        ]
        features.append(TokenFeature(input_ids=window, labels=labels, example_index=index, owned=owned))
    return features


def _token_labels(
    word_ids: list[Optional[int]], tags: Sequence[str], label2id: dict[str, int], label_all_tokens: bool
) -> list[int]:
    labels, previous = [], None
    for word in word_ids:
        if word is None:
            labels.append(IGNORE_INDEX)
        elif word != previous:
            labels.append(label2id[tags[word]])
        elif label_all_tokens:
            tag = tags[word]
            labels.append(label2id.get("I-" + tag[2:], label2id[tag]) if tag.startswith("B-") else label2id[tag])
        else:
            labels.append(IGNORE_INDEX)
        previous = word
    return labels
