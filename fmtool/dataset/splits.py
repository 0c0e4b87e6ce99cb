"""Load a dataset config's train / validation / test splits and derive the label set from train."""

from __future__ import annotations

from pathlib import Path

from dataclasses import dataclass
from typing import Optional

from fmtool.config.schema import DatasetConfig
from fmtool.dataset.examples import Example, TokenExample
from fmtool.dataset.formats import FORMATS, read_examples
from fmtool.dataset.readers import SPLIT_KEYS
from fmtool.errors import FmtoolError

_UNSEEN_LABEL = "{split} split has label(s) {labels} that never occur in the train split; the model cannot learn them (fix the data or merge the labels)"
_NO_VALIDATION = "dataset '{0}' has no validation split: set dataset.validation_file (or dataset.validation_split for Hugging Face datasets)"


@dataclass
class Splits:
    train: list[Example]
    validation: list[Example]
    test: Optional[list[Example]] = None

    def named(self) -> dict[str, list[Example]]:
        parts = {"train": self.train, "validation": self.validation}
        if self.test is not None:
            parts["test"] = self.test
        return parts


def _requested(cfg: DatasetConfig, file_key: str) -> bool:
    key = SPLIT_KEYS[file_key] if not FORMATS.get(cfg.format.value).reads_files else file_key
    return getattr(cfg, key) is not None


def load_splits(cfg: DatasetConfig) -> Splits:
    if not _requested(cfg, "validation_file"):
        raise FmtoolError(_NO_VALIDATION.format(cfg.name))
    train = non_empty(cfg, "train_file", read_examples(cfg, "train_file")[: cfg.max_train_examples])
    validation = non_empty(cfg, "validation_file", read_examples(cfg, "validation_file")[: cfg.max_eval_examples])
    test = non_empty(cfg, "test_file", read_examples(cfg, "test_file")[: cfg.max_eval_examples]) if _requested(cfg, "test_file") else None
    return Splits(train=train, validation=validation, test=test)


def non_empty(cfg: DatasetConfig, file_key: str, items: list, what: str = "examples") -> list:
    """`items` (a split's examples or documents), or an error naming the config key and file that gave none."""
    if not items:
        key = SPLIT_KEYS[file_key] if not FORMATS.get(cfg.format.value).reads_files else file_key
        source = getattr(cfg, key)
        where = source if cfg.data_dir is None or not FORMATS.get(cfg.format.value).reads_files else Path(cfg.data_dir) / source
        raise FmtoolError(f"dataset.{key}: {where} holds no {what}")
    return items


def example_labels(example: Example) -> list[str]:
    return example.tags if isinstance(example, TokenExample) else [example.label]


def label_list(examples: list[Example]) -> list[str]:
    """Sorted labels seen in `examples`; for NER, 'O' first, then B-/I- of each type."""
    seen = {label for example in examples for label in example_labels(example)}
    return sorted(seen, key=lambda tag: (tag != "O", tag[2:] if tag[1:2] == "-" else tag, tag))


def check_labels_known(split: str, examples: list[Example], labels: list[str]) -> None:
    unseen = sorted({label for example in examples for label in example_labels(example)} - set(labels))
    if unseen:
        raise FmtoolError(_UNSEEN_LABEL.format(split=split, labels=", ".join(unseen)))
