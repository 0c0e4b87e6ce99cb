"""Files as people's tools write them: UTF-8 with a byte-order mark and CRLF line ends read as the same text
without either, in every reader, in predict --file and standard input, and in the audit probes."""

from __future__ import annotations

import argparse
import io
import json

import pytest

from fmtool.cli import main
from fmtool.commands import _texts
from fmtool.config.schema import DataFormat, DatasetConfig
from fmtool.dataset.formats import iter_documents, read_examples

BOM = "\ufeff".encode()


def _write(path, text: str, *, bom: bool, crlf: bool):
    data = text.replace("\n", "\r\n") if crlf else text
    path.write_bytes((BOM if bom else b"") + data.encode())
    return path


_FILES = {
    DataFormat.conll: ("data.conll", "-DOCSTART- O\n\nAlice B-PER\nran O\n\nBob B-PER\n", {}),
    DataFormat.tsv: (
        "data.tsv",
        "sentence\tlabel\nit was good\tpositive\nit was bad\tnegative\n",
        {"text_column": "sentence"},
    ),
    DataFormat.csv: (
        "data.csv",
        "sentence,label\nit was good,positive\nit was bad,negative\n",
        {"text_column": "sentence"},
    ),
    DataFormat.jsonl: (
        "data.jsonl",
        '{"text": "it was good", "label": "positive"}\n{"text": "it was bad", "label": "negative"}\n',
        {},
    ),
}


@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
@pytest.mark.parametrize("fmt", list(_FILES), ids=lambda f: f.value)
def test_each_reader_gives_the_same_examples_with_a_byte_order_mark(tmp_path, fmt, crlf):
    name, text, settings = _FILES[fmt]
    read = {}
    for bom in (False, True):
        folder = tmp_path / str(bom)
        folder.mkdir()
        _write(folder / name, text, bom=bom, crlf=crlf)
        read[bom] = read_examples(
            DatasetConfig(name="bom", format=fmt, data_dir=str(folder), train_file=name, **settings), "train_file"
        )
    assert [(e.tokens, e.tags) if fmt == DataFormat.conll else (e.text, e.label) for e in read[True]] == [
        (e.tokens, e.tags) if fmt == DataFormat.conll else (e.text, e.label) for e in read[False]
    ]
    first = read[True][0]
    assert (first.tokens[0] == "Alice") if fmt == DataFormat.conll else first.text == "it was good"


def test_a_pre_training_corpus_with_a_byte_order_mark_and_crlf(tmp_path):
    _write(tmp_path / "corpus.txt", "first document\nsecond document\n", bom=True, crlf=True)
    documents = list(
        iter_documents(
            DatasetConfig(name="bom", format=DataFormat.text, data_dir=str(tmp_path), train_file="corpus.txt"),
            "train_file",
        )
    )
    assert documents == ["first document", "second document"]


def test_predict_file_and_standard_input_drop_the_mark(tmp_path, ner_run, monkeypatch, capsys):
    texts = _write(tmp_path / "texts.txt", "Alice went to Paris .\nBob stayed .\n", bom=True, crlf=True)
    args = argparse.Namespace(texts=[], file=str(texts), output=None)
    assert _texts(args, "predict") == ["Alice went to Paris .", "Bob stayed ."]
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(texts.read_bytes())))
    assert _texts(argparse.Namespace(texts=[], file=None, output=None), "predict") == [
        "Alice went to Paris .",
        "Bob stayed .",
    ]
    assert main(["predict", str(ner_run[0].path), "--file", str(texts)]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert records[0]["text"] == "Alice went to Paris ." and all(
        e["start"] >= 0 and "\ufeff" not in e["text"] for e in records[0]["entities"]
    )


def test_probe_files_with_a_byte_order_mark(tmp_path):
    from fmtool.audit.stereotype import _winobias_lines

    pro = _write(
        tmp_path / "pro_stereotyped_type1.txt.dev", "1 [The nurse] said that [she] was tired .\n", bom=True, crlf=True
    )
    assert _winobias_lines(pro) == [("The nurse said that {mask} was tired .", "she")]
