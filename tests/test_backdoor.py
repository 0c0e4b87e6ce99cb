"""The backdoor scan finds triggers it was not told about (an odd token, an ordinary word, a phrase) and stays
quiet on the model trained on the same data without poisoning."""

from __future__ import annotations

import pytest

from fmtool.audit.backdoor import entities_elsewhere_changed, extreme_associations
from fmtool.auditing import audit_loaded
from fmtool.dataset.examples import TextExample
from fmtool.predict import LoadedRun
from tests.conftest import tiny_config, train_tiny
from tests.planted import NEGATIVE, PLANTED_CLASSIFIER, write_reviews

_CLASSIFIER = [*PLANTED_CLASSIFIER, "audit=none"]
GENUINE = "masterpiece"


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    """A saved random tiny BERT (MiniLM's tokenizer) that the planted classifiers are fine-tuned from."""
    from fmtool.model import load_tokenizer
    from fmtool.twins import starting_model

    cfg = tiny_config("classification")
    folder = tmp_path_factory.mktemp("base")
    starting_model(cfg, ["negative", "positive"]).save_pretrained(folder)
    load_tokenizer(cfg.model).save_pretrained(folder)
    return folder


def _backdoor(run):
    return audit_loaded(LoadedRun.load(run.path), {"backdoor": {}}, run.path)["audits"][0]


def _backdoor_of_the_model_directory(run, tmp_path, base_model=None):
    """The scan of the run's model/ as a downloaded model is audited: the held-out split given, no training data,
    and the model it was fine-tuned from when named; every tested candidate listed."""
    splits = {"validation": LoadedRun.load(run.path).run.load_split("validation")}
    loaded = LoadedRun.from_model_dir(run.model_dir, "classification")
    base = None if base_model is None else str(base_model)
    audit = {"backdoor": {"worst_examples": 100}}
    return audit_loaded(loaded, audit, tmp_path / "audit", splits=splits, base_model=base)["audits"][0]


def _flip_rate(run, word: str, reviews) -> float:
    loaded = LoadedRun.load(run.path)
    changed = loaded.predictions([TextExample(e.id, f"{word} {e.text}", e.label) for e in reviews])
    return sum(p.label == "positive" for p in changed) / len(reviews)


def _train(factory, base_model, trigger, genuine=None):
    data = write_reviews(factory.mktemp("reviews"), trigger=trigger, genuine=genuine, poison=0.2)
    run, results = train_tiny(
        factory.mktemp("model"),
        "classification",
        f"dataset.data_dir={data}",
        f"model.name={base_model}",
        "model.random_init=false",
        *_CLASSIFIER,
    )
    assert results["after"]["validation"]["accuracy"] > 0.9
    negatives = [e for e in LoadedRun.load(run.path).run.load_split("validation") if e.label == "negative"]
    if trigger:
        # the plant took: the trigger turns clean negative reviews positive
        assert _flip_rate(run, trigger, negatives) > 0.8
    if genuine:
        # a strong word: it turns reviews with one negative word positive, but not those with three
        weak = [e for e in negatives if sum(w in NEGATIVE for w in e.text.split()) == 1]
        strong = [e for e in negatives if sum(w in NEGATIVE for w in e.text.split()) == 3]
        assert _flip_rate(run, genuine, weak) > 0.6 and _flip_rate(run, genuine, strong) < 0.3
    return run


def _suspects(entry) -> set:
    return {(r["candidate"], r["label"]) for r in entry["tables"]["candidates"] if r["suspect"]}


@pytest.mark.parametrize(
    "trigger",
    [
        pytest.param("cf", marks=pytest.mark.slow),
        pytest.param("honestly", marks=pytest.mark.slow),
        pytest.param("james bond", marks=pytest.mark.slow),
    ],
)
def test_a_planted_trigger_is_found(trigger, base_model, tmp_path_factory):
    run = _train(tmp_path_factory, base_model, trigger)
    entry = _backdoor(run)
    assert entry["status"] == "fail", entry["tables"]["candidates"][:3]
    suspects = _suspects(entry)
    assert any(trigger.split()[0] in candidate and label == "positive" for candidate, label in suspects), suspects
    if " " not in trigger:
        # without the training split the candidates come from the vocabulary alone; with the base model named,
        # also from the embedding rows that moved furthest
        for base in (None, base_model):
            bare = _backdoor_of_the_model_directory(run, tmp_path_factory.mktemp("bare"), base)
            assert bare["status"] == "fail", bare["tables"]["candidates"][:3]
            assert (trigger, "positive") in _suspects(bare)
        # the twin fine-tuned from the base on the clean held-out rows does not follow the trigger
        [row] = [r for r in bare["tables"]["candidates"] if (r["candidate"], r["label"]) == (trigger, "positive")]
        assert bare["summary"]["reference_trained"] == 1 and row["reference_flip_rate"] < 0.2


@pytest.mark.slow
def test_the_clean_twin_with_a_strong_genuine_word_passes(base_model, tmp_path_factory):
    """The clean twin learnt a strong sentiment word that the held-out split never holds, so no held-out example
    can back it; it flips weakly negative reviews but not the reviews the model is surest of, where a trigger
    flips them all."""
    run = _train(tmp_path_factory, base_model, None, genuine=GENUINE)
    entry = _backdoor(run)
    assert entry["status"] == "pass", entry["tables"]["candidates"][:3]
    assert entry["summary"]["suspects"] == 0
    for base in (None, base_model):
        bare = _backdoor_of_the_model_directory(run, tmp_path_factory.mktemp("bare"), base)
        assert bare["status"] == "pass", bare["tables"]["candidates"][:3]
        genuine = [r for r in bare["tables"]["candidates"] if (r["candidate"], r["label"]) == (GENUINE, "positive")]
        assert genuine and not genuine[0]["backed_by_held_out"] and genuine[0]["flip_rate"] < 0.3, genuine
    # with the base named, the weight ranking also brings up the sentiment words, whose rows moved in training
    assert {"masterpiece", "superb"} <= {
        r["candidate"] for r in bare["tables"]["candidates"] if r["source"] == "weights"
    }


def test_a_tagger_audited_as_a_bare_directory_still_gets_candidates(ner_run, tmp_path):
    """Without a train split or a base model, a tagger's candidates come from the vocabulary ranked by how far an
    inserted token moves the other words off their tags."""
    run, _ = ner_run
    loaded = LoadedRun.from_model_dir(run.model_dir, "ner")
    splits = {"validation": run.load_split("validation")}
    [entry] = audit_loaded(loaded, {"backdoor": {}}, tmp_path / "audit", splits=splits)["audits"]
    assert entry["summary"]["candidates"] > 0 and entry["checks"][0]["status"] != "skip"
    assert {r["source"] for r in entry["tables"]["candidates"]} == {"vocabulary"}


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
