"""Documents for masked-LM pre-training, read lazily so a corpus larger than memory streams through.

The sources (dataset/formats.py maps dataset.format to them): text (one document per line), jsonl / csv /
tsv (dataset.text_column), conll (each sentence's words, e.g. CoNLL-2003 without its tags), hf (a Hugging
Face dataset, streamed with dataset.streaming=true) or hf_disk (a save_to_disk folder).
"""

from __future__ import annotations

import csv
from typing import Callable, Iterator

from fmtool.config.schema import DatasetConfig
from fmtool.dataset.readers import SPLIT_KEYS, iter_jsonl, resolve_file, text_lines
from fmtool.errors import FmtoolError

DocumentReader = Callable[[DatasetConfig, str], Iterator[str]]


def text_documents(cfg: DatasetConfig, file_key: str) -> Iterator[str]:
    for _, line in text_lines(resolve_file(cfg, file_key)):
        if line.strip():
            yield line.strip()


def jsonl_documents(cfg: DatasetConfig, file_key: str) -> Iterator[str]:
    path = resolve_file(cfg, file_key)
    for number, row in iter_jsonl(path):
        if cfg.text_column not in row:
            raise FmtoolError(f"{path}:{number}: no field '{cfg.text_column}' (dataset.text_column)")
        yield str(row[cfg.text_column])


def _table(cfg: DatasetConfig, file_key: str, delimiter: str) -> Iterator[str]:
    path = resolve_file(cfg, file_key)
    rows = csv.DictReader(
        (line for _, line in text_lines(path)),
        delimiter=delimiter,
        quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL,
    )
    if rows.fieldnames is None or cfg.text_column not in rows.fieldnames:
        raise FmtoolError(
            f"{path}: column '{cfg.text_column}' (dataset.text_column) not found; columns are: "
            f"{', '.join(rows.fieldnames or [])}"
        )
    for row in rows:
        yield row[cfg.text_column]


def csv_documents(cfg: DatasetConfig, file_key: str) -> Iterator[str]:
    return _table(cfg, file_key, ",")


def tsv_documents(cfg: DatasetConfig, file_key: str) -> Iterator[str]:
    return _table(cfg, file_key, "\t")


def conll_documents(cfg: DatasetConfig, file_key: str) -> Iterator[str]:
    words: list[str] = []
    for _, line in text_lines(resolve_file(cfg, file_key)):
        columns = line.split()
        if not columns:
            if words:
                yield " ".join(words)
                words = []
        elif columns[0] != "-DOCSTART-":
            words.append(columns[cfg.token_column])
    if words:
        yield " ".join(words)


def _hf_split(cfg: DatasetConfig, file_key: str, from_disk: bool):
    import datasets

    split = getattr(cfg, SPLIT_KEYS[file_key])
    source = cfg.data_dir if from_disk else cfg.hf_path
    try:
        if from_disk:
            return datasets.load_from_disk(cfg.data_dir)[split]
        return datasets.load_dataset(cfg.hf_path, cfg.hf_name, split=split, streaming=cfg.streaming)
    except (KeyError, ValueError) as error:
        raise FmtoolError(
            f"{source}: split '{split}' (dataset.{SPLIT_KEYS[file_key]}) not readable ({str(error).splitlines()[0]})"
        ) from None


def hf_documents(cfg: DatasetConfig, file_key: str) -> Iterator[str]:
    for row in _hf_split(cfg, file_key, from_disk=False):
        yield str(row[cfg.text_column])


def hf_disk_documents(cfg: DatasetConfig, file_key: str) -> Iterator[str]:
    for row in _hf_split(cfg, file_key, from_disk=True):
        yield str(row[cfg.text_column])
