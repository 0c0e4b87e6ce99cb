"""The data audit counts planted train/test duplicates, sees a label that follows gender words, and flags a
label with too few training examples; clean data passes."""

from __future__ import annotations

import random

import pytest

from fmtool.audit.data import leaked, normalised
from fmtool.auditing import audit_loaded
from fmtool.dataset.examples import TextExample
from fmtool.predict import LoadedRun
from tests.conftest import train_tiny
from tests.planted import PLANTED_TSV, write_sentiment, write_unique_rows

_CLASSIFIER = [
    *PLANTED_TSV,
    "trainer.epochs=1",
    "audit=none",
]


def _data(run, **settings):
    return audit_loaded(LoadedRun.load(run.path), {"data": settings}, run.path)["audits"][0]


def _status(entry, name):
    return next(c["status"] for c in entry["checks"] if c["name"] == name)


def _leaky_copy(folder, copies: int):
    """Copies `copies` training rows into dev, half verbatim and half with case, punctuation and digits changed."""
    lines = (folder / "train.tsv").read_text().splitlines()
    rows = random.Random(0).sample(lines[1:], copies)
    changed = [
        r
        if i % 2
        else r.replace(" .", " !")
        .upper()
        .replace("TOK", "tok")
        .replace("\tPOSITIVE", "\tpositive")
        .replace("\tNEGATIVE", "\tnegative")
        for i, r in enumerate(rows)
    ]
    (folder / "dev.tsv").write_text((folder / "dev.tsv").read_text() + "\n".join(changed) + "\n")
    return folder


@pytest.fixture(scope="module")
def leaky_and_clean(tmp_path_factory):
    runs = {}
    for name, copies in (("clean", 0), ("leaky", 30)):
        # 400 evaluation rows: enough for 0 leaks to be judged below a 1% rate (Wilson upper bound 0.0095)
        data = write_unique_rows(tmp_path_factory.mktemp(f"{name}_data"), train=300, dev=400)
        if copies:
            _leaky_copy(data, copies)
        runs[name], _ = train_tiny(
            tmp_path_factory.mktemp(name), "classification", f"dataset.data_dir={data}", *_CLASSIFIER
        )
    return runs


def test_planted_duplicates_are_found_with_their_count(leaky_and_clean):
    leaky = _data(leaky_and_clean["leaky"])
    assert leaky["summary"]["leaked"] == 30 and leaky["summary"]["validation.exact_duplicates"] == 30
    assert _status(leaky, "leakage_rate") == "fail"
    clean = _data(leaky_and_clean["clean"])
    assert clean["summary"]["leaked"] == 0 and _status(clean, "leakage_rate") == "pass"


def test_representation_counts_fail_a_rare_label(leaky_and_clean):
    entry = _data(leaky_and_clean["clean"], min_label_representation_count=200)
    counts = {row["label"]: row["train_count"] for row in entry["tables"]["representation"]}
    assert sum(counts.values()) == 300
    assert {_status(entry, f"{label}.representation_count") for label in counts} == {"fail"}
    assert {_status(_data(leaky_and_clean["clean"]), f"{label}.representation_count") for label in counts} == {"pass"}


@pytest.mark.slow
def test_a_label_that_follows_gender_words_is_seen(tmp_path_factory):
    results = {}
    for kind in ("biased", "balanced"):
        data = write_sentiment(tmp_path_factory.mktemp(f"{kind}_data"), biased=kind == "biased", size=600)
        run, _ = train_tiny(tmp_path_factory.mktemp(kind), "classification", f"dataset.data_dir={data}", *_CLASSIFIER)
        results[kind] = _data(run)
    assert (
        _status(results["biased"], "gender_label_gap") == "fail"
        and results["biased"]["summary"]["gender_label_gap"] > 0.8
    )
    assert _status(results["balanced"], "gender_label_gap") == "pass", results["balanced"]["summary"]
    top = results["biased"]["tables"]["protected_mentions"][0]
    assert top["group"].startswith("gender:") and top["share"] == 1.0


def test_near_duplicates_need_nearly_the_same_words():
    train = [
        TextExample("a", "The quick brown fox jumps over the lazy dog near 12 farms today", "x"),
        TextExample("b", "Completely different words about markets and rates", "x"),
    ]
    evaluation = [
        TextExample("1", "the QUICK brown fox jumps over the lazy dog near 34 farms today!", "x"),
        TextExample("2", "the quick brown fox jumps over the lazy cat near 12 farms today", "x"),
        TextExample("3", "a fox", "x"),
    ]
    assert normalised(evaluation[0]) == normalised(train[0])
    found = leaked(train, evaluation, 0.8)
    assert [(j, i, kind) for j, i, kind in found] == [(0, 0, "exact"), (1, 0, "near")]


@pytest.mark.parametrize("task", ["ner", pytest.param("classification", marks=pytest.mark.slow)])
def test_fmtools_own_demo_data_does_not_leak_between_its_splits(tmp_path, task):
    """The quick start's data audit: no demo validation example repeats, or nearly repeats, a training one."""
    run, _ = train_tiny(tmp_path / task, task, "dataset.max_train_examples=null", "dataset.max_eval_examples=null")
    [entry] = audit_loaded(LoadedRun.load(run.path), {"data": {}}, run.path)["audits"]
    leakage = next(c for c in entry["checks"] if c["name"].endswith("leakage_rate"))
    assert leakage["value"] == 0 and leakage["status"] == "pass", leakage
