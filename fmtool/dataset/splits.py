"""Load a dataset config's train / validation / test splits and derive the label set from train."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Optional

from fmtool.config.schema import DatasetConfig
from fmtool.dataset.examples import Example, TokenExample
from fmtool.dataset.formats import FORMATS, read_examples
from fmtool.dataset.readers import SPLIT_KEYS
from fmtool.errors import FmtoolError

log = logging.getLogger(__name__)

_UNSEEN_LABEL = (
    "{split} split has label(s) {labels} that never occur in the train split; the model cannot learn them (fix the "
    "data or merge the labels)"
)
_NO_VALIDATION = (
    "dataset '{0}' has no validation split: set dataset.validation_file (or dataset.validation_split for Hugging Face "
    "datasets)"
)


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
    test = (
        non_empty(cfg, "test_file", read_examples(cfg, "test_file")[: cfg.max_eval_examples])
        if _requested(cfg, "test_file")
        else None
    )
    return Splits(train=train, validation=validation, test=test)


def non_empty(cfg: DatasetConfig, file_key: str, items: list, what: str = "examples") -> list:
    """`items` (a split's examples or documents), or an error naming the config key and file that gave none."""
    if not items:
        key = SPLIT_KEYS[file_key] if not FORMATS.get(cfg.format.value).reads_files else file_key
        source = getattr(cfg, key)
        where = cfg.file_path(key) if FORMATS.get(cfg.format.value).reads_files else source
        raise FmtoolError(f"dataset.{key}: {where} holds no {what}")
    return items


def example_labels(example: Example) -> list[str]:
    return example.tags if isinstance(example, TokenExample) else [example.label]


def label_list(examples: list[Example]) -> list[str]:
    """Sorted labels seen in `examples`; for NER, 'O' first, then B-/I- of each type."""
    seen = {label for example in examples for label in example_labels(example)}
    return sorted(seen, key=lambda tag: (tag != "O", tag[2:] if tag[1:2] == "-" else tag, tag))


def to_model_labels(
    what: str, examples: list[Example], model_labels: list[str], label_map: dict[str, str]
) -> list[Example]:
    """`examples` with their labels in the model's names: first through `label_map` (file value -> model label),
    then, when the file's labels are whole numbers and the model's are names (GLUE's 0/1 beside a hub model's
    negative/positive), as the model's label ids. A label that still matches nothing is named beside the model's."""
    known = set(model_labels)
    seen = {label for example in examples for label in example_labels(example)}
    mapping = {label: str(label_map[label]) for label in seen if label in label_map}
    unknown = sorted(seen - known - set(mapping))
    names_are_ids = all(label.isdigit() for label in model_labels)
    if unknown and not names_are_ids and all(label.isdigit() and int(label) < len(model_labels) for label in unknown):
        ids = {label: model_labels[int(label)] for label in unknown}
        log.info(
            "%s: labels %s taken as the model's label ids: %s",
            what,
            ", ".join(unknown),
            ", ".join(f"{k} -> {v}" for k, v in ids.items()),
        )
        mapping.update(ids)
    missing = sorted({mapping.get(label, label) for label in seen} - known)
    if missing:
        raise FmtoolError(
            f"{what}: label(s) {', '.join(missing)} are not labels of the model, whose labels are "
            f"{', '.join(model_labels)}; "
            "map them with dataset.label_map={file value: model label}"
        )
    if not mapping:
        return examples
    return [_relabelled(example, mapping) for example in examples]


def _relabelled(example: Example, mapping: dict[str, str]) -> Example:
    if isinstance(example, TokenExample):
        return replace(example, tags=[mapping.get(tag, tag) for tag in example.tags])
    return replace(example, label=mapping.get(example.label, example.label))


def check_labels_known(split: str, examples: list[Example], labels: list[str]) -> None:
    unseen = sorted({label for example in examples for label in example_labels(example)} - set(labels))
    if unseen:
        raise FmtoolError(_UNSEEN_LABEL.format(split=split, labels=", ".join(unseen)))
