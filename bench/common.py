"""Helpers shared by the bench scripts."""

from __future__ import annotations

from pathlib import Path

from fmtool.dataset.examples import TokenExample
from fmtool.dataset.readers import read_conll


def read_sentences(path: str | Path) -> list[TokenExample]:
    """CoNLL-2003 style file: token in column 0, NER tag in the last column."""
    return read_conll(Path(path))
