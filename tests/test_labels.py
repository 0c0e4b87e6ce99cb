"""Labels in the formats people bring: a model with named labels scored on files whose labels are ids or other names."""

from __future__ import annotations

import json

import pytest

from fmtool.cli import main
from fmtool.dataset.examples import TextExample
from fmtool.dataset.splits import to_model_labels
from fmtool.errors import FmtoolError
from tests.conftest import REPO

DEMO_DEV = REPO / "fmtool" / "resources" / "demo" / "classification" / "dev.tsv"


def _relabelled_dev(path, names: dict[str, str]):
    lines = DEMO_DEV.read_text().splitlines()
    rows = [line.split("\t") for line in lines[1:]]
    path.write_text("sentence\tlabel\n" + "".join(f"{text}\t{names[label]}\n" for text, label, *_ in rows))
    return path


def test_integer_labels_are_the_models_label_ids_and_a_label_map_covers_other_names():
    examples = [TextExample(id="a", text="x", label="1"), TextExample(id="b", text="y", label="0")]
    assert [e.label for e in to_model_labels("dev.tsv", examples, ["negative", "positive"], {})] == [
        "positive",
        "negative",
    ]
    renamed = [TextExample(id="a", text="x", label="good")]
    assert to_model_labels("dev.tsv", renamed, ["negative", "positive"], {"good": "positive"})[0].label == "positive"
    with pytest.raises(
        FmtoolError,
        match=r"dev.tsv: label\(s\) 2 are not labels of the model, whose labels are negative, positive; map them "
        r"with dataset.label_map",
    ):
        to_model_labels("dev.tsv", [TextExample(id="a", text="x", label="2")], ["negative", "positive"], {})


def test_a_named_label_model_is_audited_and_evaluated_on_id_labelled_files(classification_run, tmp_path, caplog):
    caplog.set_level("INFO")
    run, _ = classification_run
    labels = json.loads(run.labels_file.read_text())
    assert labels == ["negative", "positive"]
    ids = _relabelled_dev(tmp_path / "dev.tsv", {name: str(i) for i, name in enumerate(labels)})
    out = tmp_path / "audit"
    assert (
        main(
            [
                "audit",
                str(run.model_dir),
                "--task",
                "classification",
                "--split",
                f"validation={ids}",
                "audit=[calibration]",
                "--output",
                str(out),
                "dataset.text_column=sentence",
            ]
        )
        == 0
    )
    assert "labels 0, 1 taken as the model's label ids: 0 -> negative, 1 -> positive" in caplog.text
    assert json.loads((out / "audit" / "calibration.json").read_text())["summary"]["count"] == 100
    assert main(["eval", str(run.path), "--file", str(ids)]) == 0
    words = _relabelled_dev(tmp_path / "words.tsv", {"negative": "bad", "positive": "good"})
    assert (
        main(
            [
                "audit",
                str(run.model_dir),
                "--task",
                "classification",
                "--split",
                f"validation={words}",
                "audit=[calibration]",
                "--output",
                str(out),
                "dataset.text_column=sentence",
                "dataset.label_map={bad:negative,good:positive}",
            ]
        )
        == 0
    )


def test_a_label_the_model_does_not_know_is_named_beside_the_models_labels(classification_run, tmp_path, capsys):
    run, _ = classification_run
    words = _relabelled_dev(tmp_path / "words.tsv", {"negative": "bad", "positive": "good"})
    assert (
        main(
            [
                "audit",
                str(run.model_dir),
                "--task",
                "classification",
                "--split",
                f"validation={words}",
                "--output",
                str(tmp_path / "out"),
                "dataset.text_column=sentence",
            ]
        )
        == 2
    )
    error = capsys.readouterr().err.strip()
    assert error.endswith(
        "label(s) bad, good are not labels of the model, whose labels are negative, positive; map them with "
        "dataset.label_map={file value: model label}"
    )
    assert "train split" not in error
