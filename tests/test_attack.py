"""The black-box attack breaks a model whose decision hangs on one word, cannot break a constant predictor,
attacks NER outside the entities, and rejects a budget of 0."""

from __future__ import annotations

import random
import shutil

import pytest
import torch

from fmtool.audit import family_configs
from fmtool.audit.attack import char_edits
from fmtool.auditing import audit_loaded
from fmtool.errors import FmtoolError
from fmtool.predict import LoadedRun
from fmtool.runs import RunDir
from tests.conftest import fmtool_cli, train_tiny
from tests.planted import PEOPLE, PLANTED_CLASSIFIER, write_entity_sentences, write_one_word_rule

_CLASSIFIER = [*PLANTED_CLASSIFIER, "audit=none"]


def _attack(path, **settings):
    return audit_loaded(LoadedRun.load(path), {"attack": settings}, path)["audits"][0]


@pytest.fixture(scope="module")
def brittle_and_constant(tmp_path_factory):
    data = write_one_word_rule(tmp_path_factory.mktemp("rule"))
    brittle, results = train_tiny(
        tmp_path_factory.mktemp("brittle"), "classification", f"dataset.data_dir={data}", *_CLASSIFIER
    )
    assert results["after"]["validation"]["accuracy"] > 0.95
    constant = tmp_path_factory.mktemp("constant") / "run"
    shutil.copytree(brittle.path, constant)
    model = LoadedRun.load(constant).model
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([5.0, -5.0]))
    model.save_pretrained(RunDir(constant).model_dir)
    return brittle.path, constant, data / "attack.txt"


def test_a_one_word_decision_is_broken_and_a_constant_predictor_is_not(brittle_and_constant):
    brittle, constant, texts = brittle_and_constant
    broken = _attack(brittle, data=str(texts))
    assert broken["status"] == "fail" and broken["summary"]["attack_success_rate"] > 0.95, broken["summary"]
    assert broken["summary"]["attacked"] >= 40 and broken["summary"]["accuracy_under_attack"] < 0.05
    example = next(row for row in broken["tables"]["examples"] if row["succeeded"])
    assert example["adversarial"] != example["original"] and 1 <= example["words_changed"] <= max(
        1, int(0.2 * len(example["original"].split()))
    )
    assert all(row["queries"] <= 200 for row in broken["tables"]["examples"])
    steady = _attack(constant)
    assert (
        steady["summary"]["original_accuracy"] < 0.7
        and steady["summary"]["attack_success_rate"] == 0.0
        and steady["status"] == "pass"
    )


@pytest.mark.slow
def test_ner_attacks_leave_entities_alone_and_break_a_tagger_that_reads_its_cue_words(tmp_path_factory):
    # the same names are people after "mr" and places after "near": only the cue word says which
    data = write_entity_sentences(
        tmp_path_factory.mktemp("cued"), cued=True, people=PEOPLE, places=PEOPLE, cues=("mr", "near")
    )
    run, _ = train_tiny(
        tmp_path_factory.mktemp("tagger"),
        "ner",
        f"dataset.data_dir={data}",
        "dataset.train_file=train.conll",
        "dataset.validation_file=dev.conll",
        "dataset.max_train_examples=null",
        "dataset.max_eval_examples=null",
        "optimizer.lr=3e-3",
        "trainer.epochs=12",
        "scheduler.warmup_ratio=0",
        "audit=none",
    )
    entry = _attack(run.path, methods=["char"])
    assert entry["summary"]["attacked"] > 50 and entry["summary"]["attack_success_rate"] > 0.3, entry["summary"]
    for row in entry["tables"]["examples"]:
        original, adversarial = row["original"].split(), row["adversarial"].split()
        assert len(original) == len(adversarial)
        assert all(a == b for a, b in zip(original, adversarial) if a in PEOPLE)


def test_char_edits_are_seeded_and_distinct():
    edits = char_edits("wonderful", random.Random(1), 8)
    assert len(edits) == len(set(edits)) == 8 and "wonderful" not in edits
    assert edits == char_edits("wonderful", random.Random(1), 8)


@pytest.mark.parametrize(
    "settings, key",
    [
        ({"max_queries": 0}, r"audit.attack.max_queries=0"),
        ({"methods": ["textfooler"]}, r"audit.attack.methods: unknown attack 'textfooler'"),
    ],
)
def test_bad_attack_settings_name_the_key(settings, key):
    with pytest.raises(FmtoolError, match=key):
        family_configs({"attack": settings})


@pytest.mark.slow  # a CLI subprocess
def test_cli_rejects_a_budget_of_zero_with_exit_2():
    result = fmtool_cli(
        "validate", "+task=classification", "debug=tiny", "audit=[attack]", "audit.attack.max_queries=0"
    )
    assert result.returncode == 2 and "audit.attack.max_queries" in result.stderr
