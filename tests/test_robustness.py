"""The robustness audit fails models with a planted brittleness and passes their robust twins."""

from __future__ import annotations

import pytest

from fmtool.audit import family_configs
from fmtool.auditing import audit_loaded
from fmtool.errors import FmtoolError
from fmtool.predict import LoadedRun
from tests.conftest import fmtool_cli, train_tiny
from tests.helpers import word_tokenizer
from tests.planted import FILLER, PEOPLE, PLACES, write_entity_sentences

_TAGGER = [
    "dataset.train_file=train.conll",
    "dataset.validation_file=dev.conll",
    "dataset.max_train_examples=null",
    "dataset.max_eval_examples=null",
    "optimizer.lr=3e-3",
    "trainer.epochs=12",
    "scheduler.warmup_ratio=0",
    "audit=none",
]


def _tagger(factory, name: str, data, tokenizer_words, *, lowercase: bool):
    tokenizer = word_tokenizer(factory.mktemp(f"{name}_tokenizer"), tokenizer_words, lowercase=lowercase)
    run, _ = train_tiny(
        factory.mktemp(name), "ner", f"dataset.data_dir={data}", f"model.tokenizer={tokenizer}", *_TAGGER
    )
    return run


def _robustness(run, **settings):
    loaded = LoadedRun.load(run.path)
    report = audit_loaded(loaded, {"robustness": settings}, run.path)
    return report["audits"][0]


def _status(entry, test: str) -> str:
    return next(c["status"] for c in entry["checks"] if c["name"] == f"{test}.pass_rate")


@pytest.fixture(scope="module")
def case_taggers(tmp_path_factory):
    data = write_entity_sentences(
        tmp_path_factory.mktemp("cased_data"), cued=True, people=PEOPLE, places=PLACES, capitalised=True
    )
    words = [*FILLER, "mr", "in", *(w.capitalize() for w in PEOPLE + PLACES)]
    return {
        "cased": _tagger(tmp_path_factory, "cased", data, words, lowercase=False),
        "uncased": _tagger(tmp_path_factory, "uncased", data, words, lowercase=True),
    }


@pytest.mark.slow
def test_a_tagger_that_depends_on_letter_case_fails_case_tests_and_an_uncased_one_passes(case_taggers):
    cased = _robustness(case_taggers["cased"], tests=["uppercase", "lowercase"])
    assert _status(cased, "uppercase") == "fail" and _status(cased, "lowercase") == "fail"
    assert cased["summary"]["uppercase.f1_drop"] > 0.5
    uncased = _robustness(case_taggers["uncased"], tests=["uppercase", "lowercase"])
    assert _status(uncased, "uppercase") == "pass" and _status(uncased, "lowercase") == "pass", uncased["checks"]


@pytest.fixture(scope="module")
def entity_taggers(tmp_path_factory):
    # with the tiny model's WordPiece vocabulary "name1007" is "name" + "##100" + "##7": a tagger taught many such
    # names generalises to unseen ones by their form and context; one taught four names in random contexts can only
    # look its four strings up
    memorised = write_entity_sentences(
        tmp_path_factory.mktemp("memorised_data"), cued=False, people=PEOPLE[:4], places=PLACES[:4]
    )
    contextual = write_entity_sentences(
        tmp_path_factory.mktemp("contextual_data"),
        cued=True,
        people=[f"name{i}" for i in range(600)],
        places=[f"city{i}" for i in range(600)],
    )
    pool = tmp_path_factory.mktemp("pool") / "unseen.conll"
    pool.write_text("\n\n".join(f"name{i} B-PER\ncity{i} B-LOC" for i in range(1000, 1030)) + "\n")
    runs = {}
    for name, data in (("memorised", memorised), ("contextual", contextual)):
        runs[name], _ = train_tiny(tmp_path_factory.mktemp(name), "ner", f"dataset.data_dir={data}", *_TAGGER)
    return {**runs, "pool": pool}


@pytest.mark.slow
def test_a_tagger_keyed_on_exact_entity_strings_fails_swap_entities_and_a_contextual_one_passes(entity_taggers):
    pool = str(entity_taggers["pool"])
    memorised = _robustness(entity_taggers["memorised"], tests=["swap_entities"], entity_pool=pool)
    assert _status(memorised, "swap_entities") == "fail"
    contextual = _robustness(entity_taggers["contextual"], tests=["swap_entities"], entity_pool=pool)
    assert _status(contextual, "swap_entities") == "pass", contextual["checks"]
    worst = memorised["tables"]["worst_examples"][0]
    assert worst["test"] == "swap_entities" and worst["original"]["entities"] != worst["perturbed"]["entities"]


def test_robustness_results_repeat_and_cover_every_default_test(case_taggers):
    first = _robustness(case_taggers["cased"])
    again = _robustness(case_taggers["cased"])
    assert first["summary"] == again["summary"]
    tests = {row["test"] for row in first["tables"]["tests"]}
    assert {
        "add_typo",
        "add_ocr_typo",
        "strip_punctuation",
        "add_whitespace",
        "unicode_confusables",
        "zero_width",
        "swap_entities",
        "multiple_perturbations",
    } <= tests
    # passing every test that applies is at most as common as passing the hardest one
    rates = [v for k, v in first["summary"].items() if k.endswith(".pass_rate") and v is not None and v == v]
    assert first["summary"]["worst_case_pass_rate"] <= min(rates) + 1e-9


@pytest.mark.parametrize(
    "settings, key",
    [
        ({"tests": ["add_tpyo"]}, "audit.robustness.tests: unknown test 'add_tpyo'"),
        ({"min_pass_rate": {"add_typo": 1.5}}, "audit.robustness.min_pass_rate.add_typo=1.5 is outside [0, 1]"),
        ({"min_pass_rate": {"nosuch": 0.5}}, "audit.robustness.min_pass_rate.nosuch: no such test"),
    ],
)
def test_bad_robustness_settings_name_the_key(settings, key):
    with pytest.raises(FmtoolError, match=key.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        family_configs({"robustness": settings})


@pytest.mark.slow  # a CLI subprocess
def test_cli_rejects_a_bad_test_name_with_exit_2():
    result = fmtool_cli(
        "validate", "+task=ner", "debug=tiny", "audit=[robustness]", "audit.robustness.tests=[add_tpyo]"
    )
    assert (
        result.returncode == 2
        and "audit.robustness.tests" in result.stderr
        and len(result.stderr.strip().splitlines()) == 1
    )


@pytest.mark.slow
def test_augmenting_with_the_failed_perturbation_raises_its_pass_rate(tmp_path_factory, case_taggers):
    data = write_entity_sentences(
        tmp_path_factory.mktemp("cased_again"), cued=True, people=PEOPLE, places=PLACES, capitalised=True
    )
    words = [*FILLER, "mr", "in", *(w.capitalize() for w in PEOPLE + PLACES)]
    tokenizer = word_tokenizer(tmp_path_factory.mktemp("augmented_tokenizer"), words, lowercase=False)
    run, results = train_tiny(
        tmp_path_factory.mktemp("augmented"),
        "ner",
        f"dataset.data_dir={data}",
        f"model.tokenizer={tokenizer}",
        *_TAGGER,
        "dataset.augment.perturbations=[lowercase]",
        "dataset.augment.share=1.0",
    )
    assert results["augmented"]["lowercase"] > 0
    before = _robustness(case_taggers["cased"], tests=["lowercase"])["summary"]["lowercase.pass_rate"]
    after = _robustness(run, tests=["lowercase"])
    assert after["summary"]["lowercase.pass_rate"] > before + 0.15, (before, after["summary"])


def test_augmentation_adds_aligned_copies_and_records_them():
    from fmtool.config.schema import AugmentConfig
    from fmtool.dataset.augment import augment
    from fmtool.dataset.examples import TokenExample

    train = [
        TokenExample(str(i), ["Alice", "lives", "in", "Paris", "."], ["B-PER", "O", "O", "B-LOC", "O"])
        for i in range(10)
    ]
    out, added = augment(
        train, AugmentConfig(perturbations=["lowercase", "swap_gender", "add_whitespace"], share=0.5), seed=1
    )
    assert added["lowercase"] == 5 and added["swap_gender"] == 0  # no gendered word to swap
    copies = out[len(train) :]
    assert len(out) == len(train) + sum(added.values()) and all(len(c.tokens) == len(c.tags) for c in copies)
    assert all(c.id.endswith(("+lowercase", "+add_whitespace")) for c in copies)
    assert (
        out
        == augment(
            train, AugmentConfig(perturbations=["lowercase", "swap_gender", "add_whitespace"], share=0.5), seed=1
        )[0]
    )
