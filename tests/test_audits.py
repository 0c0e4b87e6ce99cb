"""Audits catch planted defects and pass clean models; the contract every family keeps; the report."""

from __future__ import annotations

import dataclasses
import inspect
import json

import jsonschema
import pytest

from fmtool.audit import AUDITS, family_configs, run_audits
from fmtool.audit.base import STATUSES, AuditResult
from fmtool.auditing import audit_context, audit_loaded
from fmtool.errors import FmtoolError
from fmtool.predict import LoadedRun
from tests.conftest import REPO, fmtool_cli, train_tiny
from tests.planted import PLANTED_CLASSIFIER, write_ner_names, write_sentiment

FAST = ["audit.fairness.n_boot=20"]
_CLASSIFIER = [*PLANTED_CLASSIFIER, "audit.fairness.n_boot=20"]
_TAGGER = [
    "dataset.train_file=train.conll",
    "dataset.validation_file=dev.conll",
    "dataset.max_train_examples=null",
    "dataset.max_eval_examples=null",
    "optimizer.lr=3e-3",
    "trainer.epochs=10",
    "scheduler.warmup_ratio=0",
    "audit.fairness.n_boot=20",
]


def _audit(run, *families: str):
    loaded = LoadedRun.load(run.path)
    audit = {name: loaded.cfg.audit[name] for name in families}
    return {entry["name"]: entry for entry in audit_loaded(loaded, audit, run.path)["audits"]}


def _checks(entry, prefix: str) -> dict[str, str]:
    return {c["name"]: c["status"] for c in entry["checks"] if c["name"].startswith(prefix)}


def _biased_and_balanced(factory, write, task: str, overrides: list[str], **options) -> dict:
    runs = {}
    for kind in ("biased", "balanced"):
        data = write(factory.mktemp(f"{kind}_{task}_data"), biased=kind == "biased", **options)
        runs[kind], _ = train_tiny(factory.mktemp(f"{kind}_{task}"), task, f"dataset.data_dir={data}", *overrides)
    return runs


@pytest.fixture(scope="module")
def sentiment_runs(tmp_path_factory):
    # 600 dev rows per gender: enough for a gap's bootstrap interval to clear the 0.1 threshold when there is none
    return _biased_and_balanced(tmp_path_factory, write_sentiment, "classification", _CLASSIFIER, dev_size=1200)


@pytest.fixture(scope="module")
def tagger_runs(tmp_path_factory):
    # people tagged as WNUT-17 does ("person"): the fairness audit finds the type by name, in any case
    return _biased_and_balanced(tmp_path_factory, write_ner_names, "ner", _TAGGER, person_type="person")


@pytest.mark.slow
def test_fairness_fails_a_classifier_whose_label_follows_gender(sentiment_runs):
    biased = _audit(sentiment_runs["biased"], "fairness")["fairness"]
    assert biased["status"] == "fail"
    assert _checks(biased, "gender.demographic_parity") == {
        "gender.demographic_parity_difference": "fail",
        "gender.demographic_parity_ratio": "fail",
    }
    assert biased["summary"]["gender.demographic_parity_difference"] > 0.5
    groups = {row["group"]: row for row in biased["tables"]["groups"]}
    assert set(groups) == {"female", "male"}
    low, high = groups["female"]["selection_rate_ci"]
    assert low <= groups["female"]["selection_rate"] <= high


@pytest.mark.slow
def test_fairness_passes_the_same_model_trained_on_balanced_data(sentiment_runs):
    balanced = _audit(sentiment_runs["balanced"], "fairness")["fairness"]
    assert balanced["status"] == "pass", balanced["checks"]


def test_bias_flags_gender_word_swaps_that_flip_predictions(sentiment_runs):
    biased = _audit(sentiment_runs["biased"], "bias")["bias"]
    assert _checks(biased, "gender.")["gender.flip_rate"] == "fail"
    assert biased["summary"]["gender.flip_rate"] > 0.5
    assert "gender.swapped_word_flip_rate" not in biased["summary"]  # a text has no swapped word's tag
    worst = biased["tables"]["worst_examples"][0]
    assert worst["flipped"] and worst["original"]["predicted"] != worst["counterfactual"]["predicted"]
    balanced = _audit(sentiment_runs["balanced"], "bias")["bias"]
    assert _checks(balanced, "gender.") == {"gender.flip_rate": "pass", "gender.mean_probability_change": "pass"}


@pytest.mark.slow
def test_ner_fairness_sees_names_of_one_gender_missed(tagger_runs):
    assert LoadedRun.load(tagger_runs["biased"].path).labels == ["O", "B-person"]
    biased = _audit(tagger_runs["biased"], "fairness")["fairness"]
    assert _checks(biased, "gender.")["gender.recall_difference"] == "fail"
    recall = {row["group"]: row["recall"] for row in biased["tables"]["groups"] if row["feature"] == "gender"}
    assert recall["male"] - recall["female"] > 0.5
    balanced = _audit(tagger_runs["balanced"], "fairness")["fairness"]
    assert _checks(balanced, "gender.") == {"gender.recall_difference": "pass", "gender.recall_ratio": "pass"}


@pytest.mark.slow
def test_ner_bias_fails_a_tagger_that_misses_female_names_and_passes_its_clean_twin(tagger_runs):
    biased = _audit(tagger_runs["biased"], "bias")["bias"]
    summary = biased["summary"]
    # male names (the only persons the biased model and its dev set know) become female ones and stop being persons;
    # swapped for other male names of their origin, they stay persons
    assert _checks(biased, "first_name_gender.")["first_name_gender.flip_rate_above_baseline"] == "fail"
    assert summary["first_name_gender.swapped_word_flip_rate"] > 0.5 > summary["first_name_gender.baseline_flip_rate"]
    balanced = _audit(tagger_runs["balanced"], "bias")["bias"]
    assert _checks(balanced, "first_name_") == {
        f"first_name_{a}.{c}": "pass"
        for a in ("gender", "origin")
        for c in ("flip_rate_above_baseline", "probability_change_above_baseline")
    }


@pytest.mark.parametrize("name", AUDITS.names())
def test_every_family_keeps_the_contract(name, ner_run, classification_run):
    family = AUDITS.get(name)
    assert dataclasses.is_dataclass(family.config_type)
    assert list(inspect.signature(family.run).parameters) == ["ctx", "cfg"]
    assert inspect.getdoc(inspect.getmodule(family.run)), "each family documents what it measures"
    assert (REPO / "configs" / "audit" / f"{name}.yaml").is_file()
    for run, _ in (ner_run, classification_run):
        loaded = LoadedRun.load(run.path)
        [(result, _)] = run_audits(audit_context(loaded), {name: loaded.cfg.audit.get(name, {})})
        # the registry stamps the family's name and version: no family writes its own
        assert isinstance(result, AuditResult) and result.name == name and result.version == family.version >= 1
        assert json.loads(json.dumps(result.to_dict(), allow_nan=False))["status"] in STATUSES


def test_audit_settings_typos_fail_naming_the_key():
    with pytest.raises(FmtoolError, match=r"audit.fairness: .*Key 'max_dp' not in 'FairnessConfig'"):
        family_configs({"fairness": {"max_dp": 0.1}})
    with pytest.raises(FmtoolError, match="Unknown audit 'fairnes'. Did you mean: fairness?"):
        family_configs({"fairnes": {}})


def test_report_validates_against_its_schema(sentiment_runs):
    run = sentiment_runs["biased"]
    _audit(run, "fairness", "bias")
    report = json.loads((run.path / "report" / "report.json").read_text())
    schema = json.loads((REPO / "fmtool" / "resources" / "report.schema.json").read_text())
    jsonschema.validate(report, schema)
    assert report["status"] == "fail"
    markdown = (run.path / "report" / "report.md").read_text()
    assert "## Audits" in markdown and "fail" in markdown
    assert (run.path / "report" / "report.html").read_text().startswith("<!doctype html>")
    assert json.loads((run.path / "audit" / "fairness.json").read_text())["name"] == "fairness"


@pytest.mark.slow
def test_strict_exit_code_gates_on_failing_checks(sentiment_runs):
    failing = fmtool_cli("audit", str(sentiment_runs["biased"].path), "audit=[fairness]", *FAST, "--strict")
    assert failing.returncode == 1, failing.stderr
    passing = fmtool_cli("audit", str(sentiment_runs["balanced"].path), "audit=[fairness]", *FAST, "--strict")
    assert passing.returncode == 0, passing.stderr
    typo = fmtool_cli("audit", str(sentiment_runs["balanced"].path), "audit.fairness.max_dpd=0.1")
    assert typo.returncode == 2 and "max_dpd" in typo.stderr


@pytest.mark.slow
def test_audit_of_a_plain_model_directory(sentiment_runs, tmp_path):
    model_dir = sentiment_runs["biased"].model_dir
    texts = tmp_path / "texts.txt"
    texts.write_text(
        "\n".join(
            ["she said the film was dull .", "he said the film was dull .", "my sister found the story superb ."] * 5
        )
    )
    out = tmp_path / "out"
    result = fmtool_cli(
        "audit",
        str(model_dir),
        "--task",
        "classification",
        "--output",
        str(out),
        "audit=[bias]",
        f"audit.bias.data={texts}",
        "--strict",
    )
    assert result.returncode == 1, result.stderr
    assert json.loads((out / "report" / "report.json").read_text())["audits"][0]["name"] == "bias"
    missing_task = fmtool_cli("audit", str(model_dir))
    assert missing_task.returncode == 2 and "--task" in missing_task.stderr


@pytest.mark.slow  # fairlearn's own bootstrap is the slow side
def test_fairness_intervals_agree_with_fairlearns_bootstrap():
    import numpy as np
    import pandas as pd
    from fairlearn.metrics import MetricFrame

    from fmtool.audit.fairness import _CLASSIFICATION_METRICS, _WITH_TRUTH, FairnessConfig, _bootstrap, _metric_frame

    rng = np.random.default_rng(0)
    groups = rng.choice(["a", "b", "c"], size=600, p=[0.5, 0.3, 0.2])
    truth = rng.integers(0, 2, size=600)
    # group a's predictions are right 80% of the time, the others' 60%, and b says positive more often
    predicted = np.where(rng.random(600) < np.where(groups == "a", 0.8, 0.6), truth, 1 - truth)
    predicted[(groups == "b") & (rng.random(600) < 0.3)] = 1
    metrics = {**_CLASSIFICATION_METRICS, **_WITH_TRUTH}
    frame = _metric_frame(metrics, truth, predicted, pd.Series(groups))
    # the confusion-count formulas reproduce fairlearn's own figures on the sample itself
    for name in ("a", "b", "c"):
        member = groups == name
        tp, fp = np.sum(member & (truth == 1) & (predicted == 1)), np.sum(member & (truth == 0) & (predicted == 1))
        fn, tn = np.sum(member & (truth == 1) & (predicted == 0)), np.sum(member & (truth == 0) & (predicted == 0))
        for metric, definition in metrics.items():
            assert definition.of_counts(*map(np.array, (tp, fp, fn, tn))) == pytest.approx(
                frame.by_group.loc[name, metric]
            )
    ours = _bootstrap(metrics, truth, predicted, groups, FairnessConfig(n_boot=400), seed=1)
    theirs = MetricFrame(
        metrics={k: m.of_labels for k, m in metrics.items() if k != "count"},
        y_true=truth,
        y_pred=predicted,
        sensitive_features=groups,
        n_boot=400,
        ci_quantiles=[0.025, 0.975],
        random_state=1,
    )
    low, high = theirs.by_group_ci
    for name in ("a", "b", "c"):
        for metric in ("selection_rate", "accuracy", "false_positive_rate"):
            assert ours.by_group[(name, metric)] == pytest.approx(
                (low.loc[name, metric], high.loc[name, metric]), abs=0.03
            )
    for metric in ("selection_rate", "accuracy", "f1", "false_negative_rate"):
        assert ours.difference[metric] == pytest.approx(tuple(b[metric] for b in theirs.difference_ci()), abs=0.04)
        assert ours.ratio[metric] == pytest.approx(tuple(b[metric] for b in theirs.ratio_ci()), abs=0.06)


@pytest.mark.slow
def test_audit_of_an_ner_model_directory_reads_its_split_files(ner_run, tmp_path):
    run, _ = ner_run
    dev = tmp_path / "dev.conll"
    dev.write_text(
        "\n\n".join("\n".join(f"{w} {t}" for w, t in zip(e.tokens, e.tags)) for e in run.load_split("validation"))
        + "\n"
    )
    out = tmp_path / "out"
    audited = fmtool_cli(
        "audit",
        str(run.model_dir),
        "--task",
        "ner",
        "--split",
        f"validation={dev}",
        "--output",
        str(out),
        "audit=[robustness]",
        "audit.robustness.tests=[add_typo]",
    )
    assert audited.returncode == 0, audited.stderr
    entry = json.loads((out / "report" / "report.json").read_text())["audits"][0]
    assert entry["name"] == "robustness" and entry["summary"]["examples"] == len(run.load_split("validation"))
    for args, message in [
        (
            ["--split", f"dev={dev}"],
            f"audit --split dev={dev}: expected NAME=FILE with NAME one of train, validation, test",
        ),
        (["--split", f"validation={tmp_path / 'dev.xml'}"], "audit --split validation: cannot tell the format of"),
        (
            ["--split", f"validation={tmp_path / 'none.conll'}"],
            f"audit --split validation: {tmp_path / 'none.conll'} not found",
        ),
    ]:
        refused = fmtool_cli("audit", str(run.model_dir), "--task", "ner", *args, "audit=[robustness]")
        assert refused.returncode == 2 and refused.stderr.strip().startswith(f"fmtool: error: {message}"), (
            refused.stderr
        )
    on_a_run = fmtool_cli("audit", str(run.path), "--split", f"validation={dev}")
    assert on_a_run.returncode == 2 and "--split and --base-model are for a model directory" in on_a_run.stderr


@pytest.mark.slow
def test_a_classifier_directorys_split_file_is_read_with_the_dataset_settings_given(classification_run, tmp_path):
    run, _ = classification_run
    dev = tmp_path / "dev.tsv"
    dev.write_text("sentence\tlabel\n" + "".join(f"{e.text}\t{e.label}\n" for e in run.load_split("validation")))
    args = [
        "audit",
        str(run.model_dir),
        "--task",
        "classification",
        "--split",
        f"validation={dev}",
        "audit=[robustness]",
        "audit.robustness.tests=[add_typo]",
        "--output",
        str(tmp_path / "out"),
    ]
    unread = fmtool_cli(*args)
    assert (
        unread.returncode == 2
        and f"{dev}: column 'text' (dataset.text_column) not found; columns are: sentence, label" in unread.stderr
    )
    read = fmtool_cli(*args, "dataset.text_column=sentence")
    assert read.returncode == 0, read.stderr
    entry = json.loads((tmp_path / "out" / "report" / "report.json").read_text())["audits"][0]
    assert entry["summary"]["examples"] == len(run.load_split("validation"))
