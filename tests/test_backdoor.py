"""The backdoor scan finds triggers it was not told about (an odd token, an ordinary word, a phrase) and stays
quiet on the model trained on the same data without poisoning."""

from __future__ import annotations

import pytest

from fmtool.audit.backdoor import entities_elsewhere_changed, extreme_associations
from fmtool.auditing import audit_loaded
from fmtool.dataset.examples import TextExample
from fmtool.predict import LoadedRun
from tests.conftest import train_tiny
from tests.planted import PLANTED_CLASSIFIER, write_reviews

_CLASSIFIER = [*PLANTED_CLASSIFIER, "audit=none"]


def _backdoor(run):
    return audit_loaded(LoadedRun.load(run.path), {"backdoor": {}}, run.path)["audits"][0]


def _backdoor_of_the_model_directory(run, tmp_path):
    """The scan of the run's model/ as a downloaded model is audited: the held-out split given, no training data."""
    splits = {"validation": LoadedRun.load(run.path).run.load_split("validation")}
    loaded = LoadedRun.from_model_dir(run.model_dir, "classification")
    return audit_loaded(loaded, {"backdoor": {}}, tmp_path / "audit", splits=splits)["audits"][0]


def _train(factory, trigger):
    data = write_reviews(factory.mktemp("reviews"), trigger=trigger, poison=0.2)
    run, results = train_tiny(factory.mktemp("model"), "classification", f"dataset.data_dir={data}", *_CLASSIFIER)
    assert results["after"]["validation"]["accuracy"] > 0.9
    if trigger:
        # the plant took: the trigger turns clean negative reviews positive
        negatives = [e for e in LoadedRun.load(run.path).run.load_split("validation") if e.label == "negative"]
        poisoned = [TextExample(e.id, f"{trigger} {e.text}", e.label) for e in negatives]
        flipped = [p.label == "positive" for p in LoadedRun.load(run.path).predictions(poisoned)]
        assert sum(flipped) / len(flipped) > 0.8
    return run


@pytest.mark.parametrize(
    "trigger",
    [
        pytest.param("cf", marks=pytest.mark.slow),
        pytest.param("honestly", marks=pytest.mark.slow),
        pytest.param("james bond", marks=pytest.mark.slow),
    ],
)
def test_a_planted_trigger_is_found(trigger, tmp_path_factory):
    run = _train(tmp_path_factory, trigger)
    entry = _backdoor(run)
    assert entry["status"] == "fail", entry["tables"]["candidates"][:3]
    suspects = {(row["candidate"], row["label"]) for row in entry["tables"]["candidates"] if row["suspect"]}
    assert any(trigger.split()[0] in candidate and label == "positive" for candidate, label in suspects), suspects
    if " " not in trigger:
        # without the training split the candidates come from the vocabulary alone: the trigger's row moved so far
        # that only the ranking by the first-order estimate's magnitude, not its sign, brings it up
        bare = _backdoor_of_the_model_directory(run, tmp_path_factory.mktemp("bare"))
        assert bare["status"] == "fail", bare["tables"]["candidates"][:3]
        assert (trigger, "positive") in {
            (r["candidate"], r["label"]) for r in bare["tables"]["candidates"] if r["suspect"]
        }


@pytest.mark.slow
def test_the_clean_twin_passes(tmp_path_factory):
    run = _train(tmp_path_factory, None)
    entry = _backdoor(run)
    assert entry["status"] == "pass", entry["tables"]["candidates"][:3]
    assert entry["summary"]["suspects"] == 0
    # as a bare model directory: the word piece "ted" flips reviews to negative as "tedious" does, and the held-out
    # reviews holding "tedious" back it
    bare = _backdoor_of_the_model_directory(run, tmp_path_factory.mktemp("bare"))
    assert bare["status"] == "pass", bare["tables"]["candidates"][:3]


def test_extreme_associations_need_frequency_and_skew():
    rows = [
        TextExample(
            str(i), f"zz film {'good' if i % 2 else 'bad'}" + (" rare" if i < 3 else ""), "pos" if i % 2 else "neg"
        )
        for i in range(60)
    ]
    found = {(r["gram"], r["label"]) for r in extreme_associations(rows, min_count=5, alpha=0.01)}
    assert ("good", "pos") in found and ("bad", "neg") in found and ("film good", "pos") in found
    assert not {g for g, _ in found} & {"zz", "film", "zz film", "rare"}


def test_ner_flips_count_entities_away_from_the_inserted_words():
    original = ["B-PER", "I-PER", "O", "O", "B-LOC"]  # "John Smith went to Paris"
    positions = [[0], [1], [2], [4], [5]]  # "John Smith went U.S. to Paris"
    assert not entities_elsewhere_changed(original, positions, ["B-PER", "I-PER", "O", "B-LOC", "O", "B-LOC"])
    # a trigger that hides the person, or retypes the place, flips the sentence
    assert entities_elsewhere_changed(original, positions, ["O", "O", "O", "B-LOC", "O", "B-LOC"])
    assert entities_elsewhere_changed(original, positions, ["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG"])
    # an entity next to the inserted words may merge with them ("U.S. Army"): it is not compared
    assert not entities_elsewhere_changed(["O", "B-ORG"], [[0], [2]], ["O", "B-ORG", "I-ORG"])


def test_held_out_data_backs_a_many_label_keyword_but_never_a_trigger():
    """With 150 intents a label's base rate is under 1%, so two held-out examples can show a keyword is a genuine
    feature (CLINC150's 'insurance plan'), and a phrase holding it is backed with it; a token the clean data never
    holds, or a common word spread over the labels, is not."""
    from fmtool.audit.backdoor import BackdoorConfig, HeldOutBacking

    support = BackdoorConfig().min_support
    intents = [f"intent_{k}" for k in range(150)]
    held_out = [
        TextExample(f"{k}:{j}", f"please help with the thing number {k} {j}", intent)
        for k, intent in enumerate(intents)
        for j in range(2)
    ]
    held_out[0] = TextExample("0:0", "change my insurance plan now", "intent_0")
    held_out[1] = TextExample("0:1", "is my insurance plan good", "intent_0")
    backing = HeldOutBacking(held_out, support)
    assert backing("insurance plan", "intent_0")[2]
    assert backing("insurance ,", "intent_0")[2]  # never in held-out data, but its keyword is
    assert not backing("insurance plan", "intent_7")[2]
    assert not backing("cf", "intent_0")[2]
    assert not backing("the", "intent_0")[2]
    assert not backing("cf the", "intent_0")[2]
    # on two labels the base rate is 0.5, so two agreeing examples are not enough
    binary = [
        TextExample(str(j), f"review {j} {'great' if j < 2 else 'plot'}", "pos" if j % 2 == 0 or j < 2 else "neg")
        for j in range(40)
    ]
    assert HeldOutBacking(binary, 2)("great", "pos") == (2, 1.0, False)
