"""dataset.format: what each format can read (labelled examples for fine-tuning, documents for masked-LM
pre-training, or both), whether it reads dataset.*_file (else a Hugging Face dataset's splits), and the file
suffixes that `fmtool eval --file` takes to mean it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from fmtool.config.schema import DatasetConfig
from fmtool.dataset import corpus, readers
from fmtool.dataset.examples import Example
from fmtool.errors import FmtoolError
from fmtool.registry import Registry


@dataclass(frozen=True)
class Format:
    examples: Optional[readers.Reader] = None
    documents: Optional[corpus.DocumentReader] = None
    reads_files: bool = True
    suffixes: tuple[str, ...] = ()


FORMATS: Registry[Format] = Registry("dataset format")
FORMATS.register("conll")(
    Format(readers.conll_examples, corpus.conll_documents, suffixes=(".conll", ".txt", ".iob", ".bio"))
)
FORMATS.register("csv")(Format(readers.csv_examples, corpus.csv_documents, suffixes=(".csv",)))
FORMATS.register("tsv")(Format(readers.tsv_examples, corpus.tsv_documents, suffixes=(".tsv",)))
FORMATS.register("jsonl")(Format(readers.jsonl_examples, corpus.jsonl_documents, suffixes=(".jsonl",)))
FORMATS.register("clinc_json")(Format(examples=readers.clinc_examples))
FORMATS.register("text")(Format(documents=corpus.text_documents))
FORMATS.register("hf")(Format(readers.hf_examples, corpus.hf_documents, reads_files=False))
FORMATS.register("hf_disk")(Format(readers.hf_disk_examples, corpus.hf_disk_documents, reads_files=False))


def format_names(*, examples: bool = False, documents: bool = False, files: bool = False) -> list[str]:
    """The formats that read labelled examples / documents / files, as asked."""
    return [
        name
        for name in FORMATS
        if (not examples or FORMATS.get(name).examples)
        and (not documents or FORMATS.get(name).documents)
        and (not files or FORMATS.get(name).reads_files)
    ]


def reading_problem(fmt: str, *, documents: bool) -> Optional[str]:
    """Why `fmt` cannot give pre-training documents (documents=True) or labelled examples, or None when it can."""
    if documents and FORMATS.get(fmt).documents is None:
        return (
            f"dataset.format={fmt} holds labelled examples, not a pre-training corpus; use one of: "
            f"{', '.join(format_names(documents=True))}"
        )
    if not documents and FORMATS.get(fmt).examples is None:
        return (
            f"dataset.format={fmt} is raw text for pre-training; labelled data needs one of: "
            f"{', '.join(format_names(examples=True))}"
        )
    return None


def format_of_file(path: Path) -> Optional[str]:
    """The labelled-example format a file's suffix names, if any."""
    return next((name for name in FORMATS if path.suffix in FORMATS.get(name).suffixes), None)


def read_examples(cfg: DatasetConfig, file_key: str) -> list[Example]:
    problem = reading_problem(cfg.format.value, documents=False)
    if problem:
        raise FmtoolError(problem)
    return FORMATS.get(cfg.format.value).examples(cfg, file_key)


def iter_documents(cfg: DatasetConfig, file_key: str) -> Iterator[str]:
    problem = reading_problem(cfg.format.value, documents=True)
    if problem:
        raise FmtoolError(problem)
    return FORMATS.get(cfg.format.value).documents(cfg, file_key)
