"""Masked-LM features: documents packed into fixed-length blocks, masked afresh in every epoch.

Documents are tokenised in chunks, joined with [SEP] and cut into blocks of max_length - 2 tokens,
each wrapped as [CLS] ... [SEP] (run_mlm.py's "group texts", so no compute goes to padding). Each
token remembers whether it starts a word, for whole-word masking. Masking follows BERT: of the
selected tokens 80% become [MASK], 10% a random token, 10% stay; the selection for block i in epoch e
is seeded by (seed, e, i), so it is the same on every rank and after a resume.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch

from fmtool.config.schema import TaskConfig
from fmtool.dataset.examples import IGNORE_INDEX, TOKENIZE_CHUNK

SPECIAL, CONTINUATION, WORD_START = -1, 0, 1
EVALUATION_EPOCH = 1_000_003  # a masking seed no training epoch uses: held-out loss is measured on fixed masks


@dataclass(frozen=True)
class BlockFeature:
    index: int
    input_ids: list[int]
    word_start: list[int]  # SPECIAL, CONTINUATION or WORD_START per token


@dataclass(frozen=True)
class Packing:
    """How documents are joined into blocks: the token after each document, and the tokens around each block."""

    separator: int
    prefix: tuple[int, ...] = ()
    suffix: tuple[int, ...] = ()

    @classmethod
    def masked(cls, tokenizer) -> "Packing":
        """BERT's: [CLS] block [SEP], documents separated by [SEP]."""
        return cls(tokenizer.sep_token_id, (tokenizer.cls_token_id,), (tokenizer.sep_token_id,))

    @classmethod
    def causal(cls, tokenizer) -> "Packing":
        """A decoder's: an end-of-text token after every document (run_clm puts none, and a model trained so never
        learns where a document ends), blocks cut at max_length."""
        return cls(tokenizer.eos_token_id)


def pack_blocks(
    documents: Iterable[str], tokenizer, max_length: int, packing: Optional[Packing] = None
) -> Iterator[BlockFeature]:
    """Blocks of at most max_length tokens, in document order (`packing`: BERT's unless given)."""
    packing = packing or Packing.masked(tokenizer)
    width = max_length - len(packing.prefix) - len(packing.suffix)
    ids: list[int] = []
    starts: list[int] = []
    count = 0
    documents = iter(documents)
    while chunk := list(itertools.islice(documents, TOKENIZE_CHUNK)):
        encoded = tokenizer(chunk, add_special_tokens=False)
        for row, token_ids in enumerate(encoded["input_ids"]):
            words = encoded.word_ids(row)
            ids.extend(token_ids)
            starts.extend(
                WORD_START if i == 0 or words[i] != words[i - 1] else CONTINUATION for i in range(len(token_ids))
            )
            ids.append(packing.separator)
            starts.append(SPECIAL)
        while len(ids) >= width:
            yield _block(count, ids[:width], starts[:width], packing)
            count += 1
            ids, starts = ids[width:], starts[width:]
    if ids:
        yield _block(count, ids, starts, packing)


def _block(index: int, ids: list[int], starts: list[int], packing: Packing) -> BlockFeature:
    around = [SPECIAL] * len(packing.prefix), [SPECIAL] * len(packing.suffix)
    return BlockFeature(index, [*packing.prefix, *ids, *packing.suffix], [*around[0], *starts, *around[1]])


def select_masked(word_start: np.ndarray, probability: float, whole_word: bool, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of the positions to predict; at least one per block that has a maskable token."""
    maskable = word_start != SPECIAL
    if not maskable.any():
        return maskable
    if whole_word:
        word_of = (np.cumsum(word_start == WORD_START) - 1).clip(min=0)
        words = np.unique(word_of[maskable])
        chosen = rng.random(len(words)) < probability
        if not chosen.any():
            chosen[rng.integers(len(words))] = True
        return maskable & np.isin(word_of, words[chosen])
    selected = maskable & (rng.random(len(word_start)) < probability)
    if not selected.any():
        selected[rng.choice(np.flatnonzero(maskable))] = True
    return selected


@dataclass(frozen=True)
class Masking:
    probability: float
    whole_word: bool
    seed: int
    mask_id: int
    vocab_size: int
    pad_id: int

    @classmethod
    def for_run(cls, task: TaskConfig, seed: int, tokenizer) -> "Masking":
        """The masking a run's config asks for, with the tokenizer's special ids."""
        return cls(
            task.mask_probability,
            task.whole_word_masking,
            seed,
            tokenizer.mask_token_id,
            len(tokenizer),
            tokenizer.pad_token_id,
        )

    def collate(self, features: Sequence[BlockFeature], epoch: int) -> dict[str, torch.Tensor]:
        width = max(len(f.input_ids) for f in features)
        input_ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(features), width), dtype=torch.long)
        for row, feature in enumerate(features):
            rng = np.random.default_rng([self.seed, epoch, feature.index])
            ids = np.array(feature.input_ids)
            selected = select_masked(np.array(feature.word_start), self.probability, self.whole_word, rng)
            roll = rng.random(len(ids))
            corrupted = ids.copy()
            corrupted[selected & (roll < 0.8)] = self.mask_id
            randomised = selected & (roll >= 0.8) & (roll < 0.9)
            corrupted[randomised] = rng.integers(0, self.vocab_size, randomised.sum())
            input_ids[row, : len(ids)] = torch.from_numpy(corrupted)
            labels[row, : len(ids)] = torch.from_numpy(np.where(selected, ids, IGNORE_INDEX))
            attention_mask[row, : len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class StreamedBlocks:
    """A BatchSource that re-reads the corpus every epoch, shuffling within a bounded buffer."""

    batches_per_epoch: Optional[int] = None

    def __init__(
        self,
        documents: Callable[[], Iterator[str]],
        tokenizer,
        *,
        max_length: int,
        batch_size: int,
        seed: int,
        buffer_size: int,
        packing: Optional[Packing] = None,
    ) -> None:
        self.documents, self.tokenizer, self.max_length = documents, tokenizer, max_length
        self.batch_size, self.seed, self.buffer_size, self.packing = batch_size, seed, buffer_size, packing

    def _shuffled(self, epoch: int) -> Iterator[BlockFeature]:
        rng = random.Random(f"{self.seed}:{epoch}")
        buffer: list[BlockFeature] = []
        for block in pack_blocks(self.documents(), self.tokenizer, self.max_length, self.packing):
            if len(buffer) < self.buffer_size:
                buffer.append(block)
                continue
            slot = rng.randrange(self.buffer_size)
            yield buffer[slot]
            buffer[slot] = block
        rng.shuffle(buffer)
        yield from buffer

    def epoch(self, epoch: int) -> Iterator[list[BlockFeature]]:
        blocks = self._shuffled(epoch)
        while batch := list(itertools.islice(blocks, self.batch_size)):
            yield batch
