"""Helpers shared by several test modules (test modules never import each other)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch

from fmtool.predict import LoadedRun
from fmtool.runs import RunDir

# a few updates of the tiny model, evaluated midway, without audits
SHORT = [
    "trainer.max_steps=8",
    "trainer.eval_every_steps=4",
    "trainer.batch_size=4",
    "dataset.max_train_examples=24",
    "audit=none",
]


def model_weights(run: RunDir) -> dict[str, torch.Tensor]:
    return LoadedRun.load(run.path).model.state_dict()


def word_tokenizer(folder: Path, words: Iterable[str], *, lowercase: bool) -> Path:
    """A BERT tokenizer whose vocabulary is the special tokens plus `words` (a few hundred ids instead of 30,522).

    With lowercase=False it is case-sensitive: an upper-cased word it has not seen becomes [UNK].
    """
    from transformers import BertTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocabulary = list(dict.fromkeys([*specials, *(w.lower() if lowercase else w for w in words)]))
    tokenizer = BertTokenizerFast(
        vocab={word: i for i, word in enumerate(vocabulary)}, do_lower_case=lowercase, strip_accents=False
    )
    tokenizer.save_pretrained(folder)
    return folder
