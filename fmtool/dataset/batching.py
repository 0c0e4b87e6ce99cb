"""Batches with little padding: length-grouped shuffling for training, length-sorted for inference."""

from __future__ import annotations

import math
import random
from typing import Iterator, Optional, Protocol, Sequence, Union

import torch

from fmtool.dataset.classification import TextFeature
from fmtool.dataset.examples import IGNORE_INDEX
from fmtool.dataset.ner import TokenFeature

Feature = Union[TokenFeature, TextFeature]
# HF's LengthGroupedSampler uses mega-batches of 50 batches: enough to sort away padding, small enough to stay random.
_MEGABATCH = 50


def train_batches(lengths: Sequence[int], batch_size: int, *, seed: int, epoch: int, grouped: bool) -> list[list[int]]:
    """One epoch's batches of example indices; the same (seed, epoch) always gives the same batches."""
    rng = random.Random(f"{seed}:{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if grouped:
        size = batch_size * _MEGABATCH
        order = [i for k in range(0, len(order), size) for i in sorted(order[k : k + size], key=lambda i: -lengths[i])]
    batches = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
    if grouped:
        rng.shuffle(batches)
    longest = max(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]), default=0)
    # the widest batch first: its activations are allocated before anything fragments the heap, later batches
    # reuse that memory (peak RSS stays near one batch's worth), and an out-of-memory error shows at step 1
    batches[0], batches[longest] = batches[longest], batches[0]
    return batches


class BatchSource(Protocol):
    """An epoch's global batches of features, the same for the same (seed, epoch) on every rank."""

    batches_per_epoch: Optional[int]  # None when the data is streamed and its length unknown

    def epoch(self, epoch: int) -> Iterator[list]: ...


class InMemoryBatches:
    def __init__(self, features: Sequence, batch_size: int, *, seed: int, grouped: bool) -> None:
        self.features, self.batch_size, self.seed, self.grouped = features, batch_size, seed, grouped
        self.lengths = [len(f.input_ids) for f in features]
        self.batches_per_epoch = math.ceil(len(features) / batch_size)

    def epoch(self, epoch: int) -> Iterator[list]:
        for indices in train_batches(self.lengths, self.batch_size, seed=self.seed, epoch=epoch, grouped=self.grouped):
            yield [self.features[i] for i in indices]


def token_budget_pieces(features: Sequence, max_tokens: Optional[int]) -> list[list]:
    """One batch as micro-batches of at most max_tokens padded tokens each (a row wider than that goes alone).

    Activation memory grows with rows x width, so the few batches of long sentences, not the typical
    batch, set the peak; splitting them caps it without changing the update.
    """
    if not max_tokens or len(features) * max(len(f.input_ids) for f in features) <= max_tokens:
        return [list(features)]
    pieces: list[list] = []
    for feature in sorted(features, key=lambda f: -len(f.input_ids)):
        if pieces and (len(pieces[-1]) + 1) * len(pieces[-1][0].input_ids) <= max_tokens:
            pieces[-1].append(feature)
        else:
            pieces.append([feature])
    return pieces


def inference_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Batches of indices sorted by length, longest first, so padding is minimal and OOM shows early."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[k : k + batch_size] for k in range(0, len(order), batch_size)]


def collate(features: Sequence[Feature], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(f.input_ids) for f in features)
    input_ids = torch.full((len(features), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(features), width), dtype=torch.long)
    for row, feature in enumerate(features):
        input_ids[row, : len(feature.input_ids)] = torch.tensor(feature.input_ids)
        attention_mask[row, : len(feature.input_ids)] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    first = features[0]
    if isinstance(first, TokenFeature) and first.labels is not None:
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        for row, feature in enumerate(features):
            labels[row, : len(feature.labels)] = torch.tensor(feature.labels)
        batch["labels"] = labels
    if isinstance(first, TextFeature):
        if first.token_type_ids is not None:
            token_type_ids = torch.zeros((len(features), width), dtype=torch.long)
            for row, feature in enumerate(features):
                token_type_ids[row, : len(feature.token_type_ids)] = torch.tensor(feature.token_type_ids)
            batch["token_type_ids"] = token_type_ids
        if first.label is not None:
            batch["labels"] = torch.tensor([f.label for f in features], dtype=torch.long)
    return batch
