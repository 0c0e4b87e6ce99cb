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
        match=(
            r"dev.tsv: label\(s\) 2 are not labels of the model, whose labels are negative, positive; map them with "
            r"dataset.label_map"
        ),
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
    rows = len(ids.read_text().splitlines()) - 1  # every row of the file, its header aside
    assert json.loads((out / "audit" / "calibration.json").read_text())["summary"]["count"] == rows
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


@pytest.mark.parametrize(
    "labels, expected",
    [
        (["negative", "positive"], {"positive": "positive", "negative": "negative"}),
        (["POS", "NEG"], {"positive": "POS", "negative": "NEG"}),
        (["1", "0"], {"positive": "1", "negative": "0"}),
        (["LABEL_0", "LABEL_1"], {"positive": "LABEL_1", "negative": "LABEL_0"}),
        (["good", "bad"], None),
        (["neg", "neutral", "pos"], None),
    ],
)
def test_sentiment_roles_are_read_from_a_models_own_labels(labels, expected):
    from fmtool.audit.fairness import sentiment_labels

    assert sentiment_labels(labels) == expected


def test_eec_style_emotions_map_to_a_named_label_models_own_labels(classification_run, tmp_path):
    from fmtool.auditing import audit_loaded
    from fmtool.predict import LoadedRun

    rows = ["Sentence,Gender,Emotion"] + [
        f"{name} feels {word} .,{gender},{emotion}"
        for name, gender in (("Alonzo", "male"), ("Nichelle", "female"), ("Harry", "male"), ("Ellen", "female"))
        for word, emotion in (("wonderful", "joy"), ("awful", "anger"), ("great", "joy"), ("terrible", "sadness"))
    ]
    (tmp_path / "eec.csv").write_text("\n".join(rows) + "\n")
    loaded = LoadedRun.load(classification_run[0].path)
    assert sorted(loaded.labels) == ["negative", "positive"]
    settings = {
        "data": str(tmp_path / "eec.csv"),
        "text_column": "Sentence",
        "label_column": "Emotion",
        "label_map": {"joy": "positive", "anger": "negative", "fear": "negative", "sadness": "negative"},
        "sensitive_columns": ["Gender"],
        "n_boot": 0,
    }
    [result] = audit_loaded(loaded, {"fairness": settings}, tmp_path / "out")["audits"]
    assert result["status"] in ("pass", "fail", "inconclusive") and result["summary"]


def test_sentiment_roles_become_an_id_labelled_models_labels_and_the_mapping_is_said():
    from types import SimpleNamespace

    from fmtool.audit.fairness import _as_model_labels

    examples = [TextExample(id="0", text="a", label="positive"), TextExample(id="1", text="b", label="negative")]
    mapped, notes = _as_model_labels(SimpleNamespace(labels=["0", "1"]), examples)
    assert [e.label for e in mapped] == ["1", "0"]
    assert notes == ["label_map's sentiment roles taken as the model's labels: positive -> '1', negative -> '0'"]
    unmapped, notes = _as_model_labels(SimpleNamespace(labels=["good", "bad"]), examples)
    assert unmapped == examples and notes == []


def test_every_selected_familys_settings_are_checked_before_the_first_one_runs(classification_run, tmp_path):
    from fmtool.auditing import audit_loaded
    from fmtool.predict import LoadedRun

    (tmp_path / "people.csv").write_text("text,label,group\ngreat film .,maybe,a\nawful film .,no,b\n")
    audit = {
        "calibration": {},
        "fairness": {"data": str(tmp_path / "people.csv"), "label_column": "label", "sensitive_columns": ["group"]},
        "bias": {"data": str(tmp_path / "missing.txt")},
    }
    with pytest.raises(FmtoolError) as error:
        audit_loaded(LoadedRun.load(classification_run[0].path), audit, tmp_path / "out")
    message = str(error.value)
    assert message.startswith("audit: ") and "\n" not in message
    assert "audit.fairness: labels maybe, no are not model labels (negative, positive)" in message
    assert f"audit.bias.data: {tmp_path / 'missing.txt'} not found" in message
    assert not (tmp_path / "out" / "audit").exists() and not (tmp_path / "out" / "report").exists()
