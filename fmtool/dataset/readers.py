"""Labelled examples from files (CoNLL columns, CSV/TSV/JSONL, CLINC150 JSON) and Hugging Face datasets.

Every reader returns a list of TokenExample or TextExample (dataset/formats.py maps dataset.format to them).
Errors name the file and line.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Optional

from fmtool.config.schema import DatasetConfig
from fmtool.dataset.examples import Example, TextExample, TokenExample
from fmtool.dataset.tags import check_tag, detect_scheme, to_iob2
from fmtool.errors import FmtoolError

Reader = Callable[[DatasetConfig, str], list[Example]]

_FILE_MISSING = "{0}: file not found (dataset.{1})"
_COLUMNS = "{0}:{1}: expected a token in column {2} and a tag in column {3}, found {4} column(s)"
_NO_COLUMN = "{0}: column '{1}' (dataset.{2}) not found; columns are: {3}"
_NO_VALUE = "{0}:{1}: no value in column '{2}' (dataset.{3})"
_COLUMN_COUNT = "{0}:{1}: {2} columns, but the file's first token line has {3}; every token line needs the same columns"
_BOM = "\ufeff".encode("utf-8")
_NOT_UTF8 = "{0}:{1}: not UTF-8 text (byte {2:#x}); convert the file to UTF-8"
_NOT_OBJECT = "{0}:{1}: expected a JSON object per line, found {2}"


def resolve_file(cfg: DatasetConfig, key: str) -> Path:
    if getattr(cfg, key) is None:
        raise FmtoolError(f"dataset.{key} is null, and this run reads it: name the file")
    path = cfg.file_path(key)
    if not path.is_file():
        raise FmtoolError(_FILE_MISSING.format(path, key))
    return path


def decoded_lines(handle: BinaryIO, name: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a binary stream of UTF-8 text; a byte that is not UTF-8 is an error naming `name`
    and its line. A byte-order mark at the start (Windows editors and spreadsheet exports write one) is not text:
    kept, it would hide -DOCSTART-, rename the first CSV column and become part of the first text."""
    for number, raw in enumerate(handle, start=1):
        if number == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise FmtoolError(_NOT_UTF8.format(name, number, raw[error.start])) from None


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 file, read lazily."""
    with open(path, "rb") as handle:
        yield from decoded_lines(handle, path)


def read_json(path: Path) -> Any:
    """A UTF-8 JSON file's value; text that is not JSON is an error naming the file and line."""
    try:
        return json.loads("".join(line for _, line in text_lines(path)))
    except json.JSONDecodeError as error:
        raise FmtoolError(f"{path}:{error.lineno}: invalid JSON ({error.msg})") from None


def read_conll(
    path: Path, *, token_column: int = 0, tag_column: int = -1, tag_scheme: str = "auto"
) -> list[TokenExample]:
    """Sentences from a CoNLL column file; -DOCSTART- lines are skipped, blank lines end sentences.

    Every token line must have as many columns as the first: a line missing its tag column would otherwise
    read another column (a chunk tag such as I-NP) as the entity tag.
    """
    sentences: list[tuple[list[str], list[str]]] = []
    tokens: list[str] = []
    tags: list[str] = []
    width = None
    for number, line in text_lines(path):
        columns = line.split()
        if not columns:
            if tokens:
                sentences.append((tokens, tags))
                tokens, tags = [], []
            continue
        if columns[0] == "-DOCSTART-":
            continue
        try:
            if len(columns) < 2:
                raise IndexError
            width = width or len(columns)
            if len(columns) != width:
                raise FmtoolError(_COLUMN_COUNT.format(path, number, len(columns), width))
            token, tag = columns[token_column], columns[tag_column]
            check_tag(tag)
        except IndexError:
            raise FmtoolError(_COLUMNS.format(path, number, token_column, tag_column, len(columns))) from None
        except ValueError as error:
            raise FmtoolError(f"{path}:{number}: {error}") from None
        tokens.append(token)
        tags.append(tag)
    if tokens:
        sentences.append((tokens, tags))
    scheme = detect_scheme([t for _, t in sentences]) if tag_scheme == "auto" else tag_scheme
    return [
        TokenExample(id=f"{path.name}:{i}", tokens=w, tags=to_iob2(t, scheme)) for i, (w, t) in enumerate(sentences)
    ]


def _text_example(path: Path, line: int | str, row: dict, cfg: DatasetConfig, row_id: str) -> TextExample:
    used = {cfg.text_column, cfg.label_column, cfg.text_pair_column}
    for key, column in (
        ("text_column", cfg.text_column),
        ("label_column", cfg.label_column),
        ("text_pair_column", cfg.text_pair_column),
    ):
        if column is not None and column not in row:
            raise FmtoolError(_NO_COLUMN.format(path, column, key, ", ".join(map(str, row))))
        # a short CSV row leaves its last fields None, and JSON may say null: neither is a label or a text
        if column is not None and (row[column] is None or (key == "label_column" and not str(row[column]).strip())):
            raise FmtoolError(_NO_VALUE.format(path, line, column, key))
    return TextExample(
        id=row_id,
        text=str(row[cfg.text_column]).strip(),
        label=str(row[cfg.label_column]).strip(),
        text_pair=None if cfg.text_pair_column is None else str(row[cfg.text_pair_column]).strip(),
        meta={k: v for k, v in row.items() if k not in used},
    )


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) of each non-blank line of a JSONL file, read lazily; anything else names its line."""
    for number, line in text_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise FmtoolError(f"{path}:{number}: invalid JSON ({error.msg})") from None
        if not isinstance(row, dict):
            raise FmtoolError(_NOT_OBJECT.format(path, number, type(row).__name__))
        yield number, row


def read_rows(path: Path, fmt: str) -> list[tuple[int, dict]]:
    """(line number, row) pairs of a CSV, TSV or JSONL file."""
    if fmt == "jsonl":
        return list(iter_jsonl(path))
    delimiter = "\t" if fmt == "tsv" else ","
    # TSV files such as GLUE's hold bare quote characters inside sentences
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.DictReader((line for _, line in text_lines(path)), delimiter=delimiter, quoting=quoting)
    rows = []
    try:
        for row in reader:
            rows.append((reader.line_num, row))
    except csv.Error as error:
        raise FmtoolError(f"{path}:{reader.line_num + 1}: {error}") from None
    return rows


def read_table(path: Path, cfg: DatasetConfig, fmt: str) -> list[TextExample]:
    return [_text_example(path, line, row, cfg, f"{path.name}:{line}") for line, row in read_rows(path, fmt)]


def conll_examples(cfg: DatasetConfig, file_key: str) -> list[Example]:
    path = resolve_file(cfg, file_key)
    return read_conll(path, token_column=cfg.token_column, tag_column=cfg.tag_column, tag_scheme=cfg.tag_scheme.value)


def csv_examples(cfg: DatasetConfig, file_key: str) -> list[Example]:
    return read_table(resolve_file(cfg, file_key), cfg, "csv")


def tsv_examples(cfg: DatasetConfig, file_key: str) -> list[Example]:
    return read_table(resolve_file(cfg, file_key), cfg, "tsv")


# JSONL sentences for NER, as a run saves them (tokens, tags) and as Hugging Face exports them (tokens, ner_tags)
_TAG_KEYS = ("tags", "ner_tags")


def jsonl_examples(cfg: DatasetConfig, file_key: str) -> list[Example]:
    """A JSONL file's rows: NER sentences when the first row holds `tokens` and `tags` (or `ner_tags`), else texts
    with labels. Tags that are whole numbers stay as they are, to be read as the model's label ids."""
    path = resolve_file(cfg, file_key)
    rows = read_rows(path, "jsonl")
    first = rows[0][1] if rows else {}
    tag_key = next((key for key in _TAG_KEYS if key in first), None)
    if "tokens" not in first or tag_key is None:
        return [_text_example(path, line, row, cfg, f"{path.name}:{line}") for line, row in rows]
    sentences = [_sentence(path, line, row, tag_key) for line, row in rows]
    if any(tag.isdigit() for _, tags in sentences for tag in tags):
        return [TokenExample(f"{path.name}:{line}", w, t) for (line, _), (w, t) in zip(rows, sentences)]
    scheme = detect_scheme([t for _, t in sentences]) if cfg.tag_scheme.value == "auto" else cfg.tag_scheme.value
    return [TokenExample(f"{path.name}:{line}", w, to_iob2(t, scheme)) for (line, _), (w, t) in zip(rows, sentences)]


def _sentence(path: Path, line: int, row: dict, tag_key: str) -> tuple[list[str], list[str]]:
    tokens, tags = row.get("tokens"), row.get(tag_key)
    if not isinstance(tokens, list) or not isinstance(tags, list) or len(tokens) != len(tags):
        raise FmtoolError(f"{path}:{line}: 'tokens' and '{tag_key}' must be lists of the same length")
    tags = [str(tag) for tag in tags]
    try:
        for tag in tags:
            if not tag.isdigit():
                check_tag(tag)
    except ValueError as error:
        raise FmtoolError(f"{path}:{line}: {error}") from None
    return [str(token) for token in tokens], tags


SPLIT_KEYS = {"train_file": "train_split", "validation_file": "validation_split", "test_file": "test_split"}


def clinc_examples(cfg: DatasetConfig, file_key: str) -> list[Example]:
    """CLINC150's data_full.json: {split: [[text, intent], ...]}; the split name comes from dataset.*_split."""
    path = resolve_file(cfg, file_key)
    split = getattr(cfg, SPLIT_KEYS[file_key])
    data = read_json(path)
    if not isinstance(data, dict):
        raise FmtoolError(f"{path}: expected a JSON object of splits, found {type(data).__name__}")
    if split not in data:
        raise FmtoolError(
            f"{path}: split '{split}' (dataset.{SPLIT_KEYS[file_key]}) not found; splits are: {', '.join(data)}"
        )
    return [TextExample(id=f"{split}:{i}", text=text, label=label) for i, (text, label) in enumerate(data[split])]


def _hf_rows(cfg: DatasetConfig, file_key: str, from_disk: bool) -> tuple[str, dict, list[dict]]:
    """(split name, the split's feature types, its rows)."""
    import datasets

    split = getattr(cfg, SPLIT_KEYS[file_key])
    if from_disk:
        loaded = datasets.load_from_disk(cfg.data_dir)
    else:
        loaded = datasets.load_dataset(cfg.hf_path, cfg.hf_name)
    if split not in loaded:
        raise FmtoolError(
            f"{cfg.hf_path or cfg.data_dir}: split '{split}' (dataset.{SPLIT_KEYS[file_key]}) not found; splits "
            f"are: {', '.join(loaded)}"
        )
    part = loaded[split]
    return split, part.features, list(part)


def _hf_examples(cfg: DatasetConfig, file_key: str, from_disk: bool) -> list[Example]:
    split, features, rows = _hf_rows(cfg, file_key, from_disk)
    if "tokens" in features and "ner_tags" in features:
        names = features["ner_tags"].feature.names
        sentences = [[names[i] for i in row["ner_tags"]] for row in rows]
        scheme = detect_scheme(sentences) if cfg.tag_scheme.value == "auto" else cfg.tag_scheme.value
        return [
            TokenExample(id=f"{split}:{i}", tokens=list(row["tokens"]), tags=to_iob2(tags, scheme))
            for i, (row, tags) in enumerate(zip(rows, sentences))
        ]
    label_feature = features.get(cfg.label_column)
    names: Optional[list[str]] = getattr(label_feature, "names", None)
    examples = []
    for i, row in enumerate(rows):
        if names is not None:
            row[cfg.label_column] = names[row[cfg.label_column]]
        examples.append(_text_example(Path(cfg.hf_path or cfg.data_dir), f"{split}:{i}", row, cfg, f"{split}:{i}"))
    return examples


def hf_examples(cfg: DatasetConfig, file_key: str) -> list[Example]:
    return _hf_examples(cfg, file_key, from_disk=False)


def hf_disk_examples(cfg: DatasetConfig, file_key: str) -> list[Example]:
    return _hf_examples(cfg, file_key, from_disk=True)
