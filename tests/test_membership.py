"""The membership audit fails a model that memorised its training rows and passes a normally trained twin."""

from __future__ import annotations

import numpy as np
import pytest

from fmtool.audit import family_configs
from fmtool.audit.membership import min_k_scores, tpr_at_fpr
from fmtool.auditing import audit_loaded
from fmtool.errors import FmtoolError
from fmtool.predict import LoadedRun
from fmtool.task.base import ExampleScore
from fmtool.twins import finetune_model
from tests.conftest import train_tiny
from tests.planted import POSITIVE, write_unique_rows

# validation on the training rows, so the kept (best) weights are the most memorised; the real held-out rows are the
# test split
_CLASSIFIER = [
    "dataset.format=tsv",
    "dataset.train_file=train.tsv",
    "dataset.validation_file=train.tsv",
    "dataset.test_file=dev.tsv",
    "dataset.text_column=sentence",
    "dataset.max_train_examples=null",
    "dataset.max_eval_examples=null",
    "scheduler.warmup_ratio=0",
    "audit=none",
]


def _membership(run, **settings):
    settings.setdefault("held_out_splits", ["test"])
    return audit_loaded(LoadedRun.load(run.path), {"membership": settings}, run.path)["audits"][0]


# the reference twin that learns the sentiment words from the held-out rows without learning their flipped quarter:
# a gentle rate and dropout 0.2 (measured on an AMD EPYC: 97% of the unflipped training rows right, and the ten most
# exposed members all flipped; at dropout 0.1 and lr 1e-3 the twin fitted some noise and only five of ten were)
_WORD_LEARNING_TWIN = ["trainer.epochs=8", "optimizer.lr=5e-4", "model.dropout=0.2"]


@pytest.fixture(scope="module")
def memorised_and_normal(tmp_path_factory):
    # unique rows with a quarter of the labels flipped: only a model that memorises its rows fits those, and only for
    # members; 300 held-out rows are enough for a regularised twin to learn the sentiment words despite the noise
    data = write_unique_rows(tmp_path_factory.mktemp("unique"), dev=600)
    memorised, _ = train_tiny(
        tmp_path_factory.mktemp("memorised"),
        "classification",
        f"dataset.data_dir={data}",
        *_CLASSIFIER,
        "optimizer.lr=2e-3",
        "trainer.epochs=60",
        "scheduler=constant",
        "model.dropout=0.0",
        "optimizer.weight_decay=0",
    )
    normal, _ = train_tiny(
        tmp_path_factory.mktemp("normal"),
        "classification",
        f"dataset.data_dir={data}",
        *_CLASSIFIER,
        "optimizer.lr=1e-3",
        "trainer.epochs=2",
    )
    _assert_planted(LoadedRun.load(memorised.path))
    return memorised, normal


def _assert_planted(loaded: LoadedRun) -> None:
    """The plants the test relies on, measured directly: the memorising model fits its flipped training rows, and
    the twin trained like the audit's reference on held-out rows gets the training rows' sentiment words right."""
    train = loaded.run.load_split("train")
    flipped = [e for e in train if _label_contradicts_its_word(e)]
    fitted = np.mean([s.loss < 0.69 for s in loaded.scores(flipped)])
    assert fitted >= 0.9, f"the memorising model fits only {fitted:.0%} of its {len(flipped)} flipped rows"
    twin = finetune_model(loaded.cfg, loaded.labels, loaded.run.load_split("test")[:300], _WORD_LEARNING_TWIN)
    consistent = [e for e in train if not _label_contradicts_its_word(e)]
    learnt = np.mean([s.loss < 0.69 for s in loaded.scores(consistent, model=twin)])
    assert learnt >= 0.9, (
        f"the reference twin gets only {learnt:.0%} of the unflipped training rows right: it did not learn the "
        "sentiment words"
    )


@pytest.mark.slow
def test_a_memorising_model_fails_and_a_normal_twin_passes(memorised_and_normal):
    memorised, normal = memorised_and_normal
    leaky = _membership(memorised, reference_overrides=["trainer.epochs=2", "optimizer.lr=1e-3"])
    assert leaky["status"] == "fail", leaky["summary"]
    assert (
        leaky["summary"]["loss.auc"] > 0.7
        and leaky["summary"]["member_mean_loss"] < leaky["summary"]["non_member_mean_loss"]
    )
    assert {row["attack"] for row in leaky["tables"]["roc"]} == {"blind", "loss", "min_k", "reference"}
    assert abs(leaky["summary"]["blind.auc"] - 0.5) < 0.15  # members and non-members of one distribution
    # one unit per classified text: Min-K% is its loss
    assert leaky["summary"]["min_k.auc"] == pytest.approx(leaky["summary"]["loss.auc"])
    # with a twin that learns the sentiment words, the records the model memorised most are the ones whose label
    # contradicts their word (the flipped quarter): the twin gets them wrong, the memorising model fits them
    rows = {e.id: e for e in LoadedRun.load(memorised.path).run.load_split("train")}
    exposed = _membership(memorised, reference_overrides=_WORD_LEARNING_TWIN)["tables"]["most_exposed"]
    assert len(exposed) == 10 and [r["score"] for r in exposed] == sorted((r["score"] for r in exposed), reverse=True)
    assert sum(_label_contradicts_its_word(rows[r["id"]]) for r in exposed) >= 7, [
        rows[r["id"]] for r in exposed
    ]  # by chance: 2.5
    tight = _membership(normal, reference_overrides=["trainer.epochs=2", "optimizer.lr=1e-3"])
    assert tight["status"] == "pass", (tight["summary"], tight["checks"])
    # 600 held-out rows: 300 train the reference twin, 300 are the non-members, matched by the 200 members
    assert tight["summary"]["examples"] == leaky["summary"]["examples"] == 200


def _label_contradicts_its_word(row) -> bool:
    word = row.text.split()[-2]
    return (word in POSITIVE) != (row.label == "positive")


def test_too_few_held_out_examples_skip_with_the_reason(classification_run):
    run, _ = classification_run
    entry = _membership(run)
    assert entry["status"] == "skip" and "fewer than min_examples=50" in entry["warnings"][0]


def test_min_k_reads_the_least_likely_units_only():
    # equal mean losses; the member-like text has no very unlikely token, the unseen-like one has one
    smooth, spiky = ExampleScore(1.0, 5, (1.0,) * 5), ExampleScore(1.0, 5, (0.2, 0.2, 0.2, 0.2, 4.2))
    assert list(min_k_scores([smooth, spiky], 0.2)) == pytest.approx([-1.0, -4.2])
    assert list(min_k_scores([spiky], 0.4)) == pytest.approx([-2.2])  # ceil(0.4 * 5) = 2 tokens
    assert list(min_k_scores([ExampleScore(0.7, 1)], 0.2)) == pytest.approx([-0.7])  # no unit losses: the loss


def test_tpr_at_low_fpr_of_a_hand_made_ranking():
    labels = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0] * 10)
    scores = np.arange(100, 0, -1, dtype=float)
    # the top-ranked 3 of every 10 are members: at 0 false positives the first three members are found
    assert tpr_at_fpr(labels, scores, 0.0) == pytest.approx(3 / 40)
    assert tpr_at_fpr(labels, scores, 1.0) == 1.0


def test_bad_membership_settings_name_the_key():
    with pytest.raises(FmtoolError, match="audit.membership.attacks: unknown attack 'lira'"):
        family_configs({"membership": {"attacks": ["lira"]}})
    with pytest.raises(FmtoolError, match=r"audit.membership.reference_share=1.0"):
        family_configs({"membership": {"reference_share": 1.0}})


@pytest.fixture(scope="module")
def shifted_splits(tmp_path_factory):
    """Half the training rows start with 'review :' and no held-out row does; one model trained normally, one that
    memorises its rows (the flipped quarter included)."""
    data = write_unique_rows(tmp_path_factory.mktemp("shifted"), dev=600, train_prefix_share=0.5)
    runs = {}
    for name, recipe in (
        ("normal", ["optimizer.lr=2e-3", "trainer.epochs=6"]),
        ("memorised", ["optimizer.lr=2e-3", "trainer.epochs=60", "scheduler=constant", "model.dropout=0.0"]),
    ):
        runs[name], runs[f"{name}_results"] = train_tiny(
            tmp_path_factory.mktemp(name), "classification", f"dataset.data_dir={data}", *_CLASSIFIER, *recipe
        )
    return runs


@pytest.mark.slow
def test_splits_that_differ_are_named_by_the_blind_baseline_and_only_memorisation_fails(shifted_splits):
    # the normal twin learned the sentiment words (its held-out accuracy, flipped quarter included, near 0.75)
    loaded = LoadedRun.load(shifted_splits["normal"].path)
    held_out = loaded.run.load_split("test")
    accuracy = np.mean([p.label == e.label for p, e in zip(loaded.predictions(held_out), held_out)])
    assert accuracy > 0.65, accuracy
    settings = {"attacks": ["loss", "reference"], "reference_overrides": ["trainer.epochs=2", "optimizer.lr=1e-3"]}
    normal = _membership(shifted_splits["normal"], **settings)
    assert normal["summary"]["blind.auc"] > 0.65 and normal["status"] != "fail", normal["summary"]
    assert any("the member and non-member splits differ: a blind baseline" in w for w in normal["warnings"])
    assert [c["name"] for c in normal["checks"]] == [
        "loss.auc_within_blind_strata",
        "reference.auc_within_blind_strata",
    ]
    memorised = _membership(shifted_splits["memorised"], **settings)
    assert memorised["status"] == "fail" and memorised["summary"]["reference.auc_within_blind_strata"] > 0.65, (
        memorised["summary"]
    )


def test_the_blind_baseline_tells_prefixed_rows_apart_and_not_rows_of_one_source(tmp_path):
    from sklearn.metrics import roc_auc_score

    from fmtool.audit.membership import blind_scores

    data = write_unique_rows(tmp_path, train=80, dev=80)
    rows = [
        line.split("\t")[0]
        for split in ("train", "dev")
        for line in (data / f"{split}.tsv").read_text().splitlines()[1:]
    ]
    labels = np.array([1.0] * 80 + [0.0] * 80)
    assert abs(roc_auc_score(labels, blind_scores(rows, labels, 0)) - 0.5) < 0.15
    prefixed = [f"review : {t}" for t in rows[:80]] + rows[80:]
    assert roc_auc_score(labels, blind_scores(prefixed, labels, 0)) > 0.95


def test_the_stratified_auc_reads_pairs_within_strata_and_is_unmeasured_when_none_mix():
    from fmtool.audit.membership import stratified_auc

    labels = np.array([1.0] * 50 + [0.0] * 50)
    blind = np.concatenate([np.linspace(0, 1, 50), np.linspace(0, 1, 50)])  # alike for both kinds
    attack = labels + np.linspace(0, 0.5, 100)  # every member above every non-member
    assert stratified_auc(labels, attack, blind) == 1.0
    assert stratified_auc(labels, -attack, blind) == 0.0
    # the texts alone tell them apart: with strata at the median, no stratum holds both kinds
    assert np.isnan(stratified_auc(labels, attack, labels + np.linspace(0, 0.1, 100), strata=2))
