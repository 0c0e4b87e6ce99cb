"""Where each finding comes from: paired statistics on shared items (exact McNemar, the cluster and multi-seed
bootstrap, Holm), the verdict rules, and planted foundation models: bias brought by the fine-tuning data is
`introduced`, bias the foundation model brings and a clean fine-tuning keeps is `inherited`, a clean twin has no
finding."""

from __future__ import annotations

import numpy as np
import pytest

from fmtool.audit.paired import (
    AMPLIFIED,
    INDETERMINATE,
    INHERITED,
    INTRODUCED,
    MITIGATED,
    NO_FINDING,
    PairedDifference,
    exact_mcnemar,
    holm,
    paired_difference,
    verdict,
)
from fmtool.auditing import audit_loaded
from fmtool.config.schema import AttributionConfig
from fmtool.predict import LoadedRun
from tests.conftest import train_tiny
from tests.planted import PLANTED_CLASSIFIER, write_sentiment


def _arm(values, groups=()):
    return {"ids": [f"i{k}" for k in range(len(values))], "values": list(map(float, values)), "groups": list(groups)}


def test_exact_mcnemar_and_holm_match_their_definitions():
    reference = np.array([1] * 12 + [0] * 2 + [1] * 50)
    candidate = np.array([0] * 12 + [1] * 2 + [1] * 50)
    assert exact_mcnemar(reference, candidate) == pytest.approx(2 * (1 + 14 + 91) / 2**14)
    assert exact_mcnemar(reference, reference) == 1.0
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_items_of_one_group_resample_together_and_seeds_widen_the_interval():
    rng = np.random.default_rng(0)
    reference = rng.random(200)
    shifted = reference + 0.05 + rng.normal(0, 0.02, 200)
    alone = paired_difference("c", [_arm(reference)], [_arm(shifted)])
    assert alone.difference == pytest.approx(np.mean(shifted - reference)) and alone.interval[0] > 0
    # ten groups of twenty items that move together: ten independent pieces of evidence, not 200
    groups = [str(k // 20) for k in range(200)]
    block = np.repeat(rng.normal(0, 0.05, 10), 20)
    grouped = paired_difference("c", [_arm(reference, groups)], [_arm(reference + block, groups)])
    ungrouped = paired_difference("c", [_arm(reference)], [_arm(reference + block)])
    assert grouped.interval[1] - grouped.interval[0] > 2 * (ungrouped.interval[1] - ungrouped.interval[0])
    seeds = [_arm(reference + rng.normal(0, 0.05, 200)) for _ in range(3)]
    multi = paired_difference("c", seeds, [_arm(s["values"]) for s in seeds])
    assert multi.test == "paired multi-bootstrap" and multi.seeds == 3 and multi.difference == 0.0
    assert paired_difference("c", [_arm([1] * 5)], [_arm([0] * 5)]) is None  # too few shared items


@pytest.mark.parametrize(
    "reference, candidate, interval, p, expected",
    [
        (0.30, 0.31, (-0.02, 0.03), 0.5, INHERITED),  # P fails (> 0.1), no change within the margin
        (0.02, 0.40, (0.30, 0.46), 0.001, INTRODUCED),
        (0.30, 0.60, (0.25, 0.35), 0.001, AMPLIFIED),
        (0.30, 0.05, (-0.30, -0.20), 0.001, MITIGATED),
        (0.01, 0.02, (-0.01, 0.03), 0.4, NO_FINDING),
        (0.05, 0.20, (-0.05, 0.35), 0.3, INDETERMINATE),  # F fails, the items cannot tell where from
        (0.30, 0.32, (-0.10, 0.14), 0.6, INDETERMINATE),  # P fails, but the interval is wider than the margin
    ],
)
def test_each_verdict_follows_its_rule(reference, candidate, interval, p, expected):
    found = PairedDifference("flip_rate", reference, candidate, candidate - reference, interval, p, 400, 1, "t", p)
    assert verdict(found, threshold=0.1, direction="max", margin=0.05) == expected


def _attributed(run):
    report = audit_loaded(LoadedRun.load(run.path), {"bias": {}}, run.path, attribution=AttributionConfig(enabled=True))
    return report, {row["check"]: row for row in report["attribution"]["checks"]}


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory):
    """A clean (random) foundation model fine-tuned on data whose label follows gender, and its balanced twin."""
    runs = {}
    for kind in ("biased", "balanced"):
        data = write_sentiment(tmp_path_factory.mktemp(f"{kind}_data"), biased=kind == "biased")
        runs[kind], runs[f"{kind}_results"] = train_tiny(
            tmp_path_factory.mktemp(kind), "classification", f"dataset.data_dir={data}", *PLANTED_CLASSIFIER
        )
        runs[f"{kind}_data"] = data
    return runs


def test_bias_from_the_fine_tuning_data_is_introduced_and_a_clean_twin_has_no_finding(sentiment):
    assert sentiment["balanced_results"]["after"]["validation"]["accuracy"] > 0.9  # the clean twin learned
    report, biased = _attributed(sentiment["biased"])
    flip = biased["bias.gender.flip_rate"]
    assert flip["verdict"] == INTRODUCED and flip["candidate"] > 0.5 and flip["reference"] < 0.1
    assert flip["test"] == "exact McNemar" and flip["adjusted_p"] < 1e-6 and flip["seeds"] == 1
    assert "about this model" in report["attribution"]["claim"]
    text = (sentiment["biased"].report_markdown).read_text()
    assert "## Where each finding comes from" in text and "| bias.gender.flip_rate |" in text
    assert 'data-plot="attribution"' in sentiment["biased"].report_html.read_text()
    _, balanced = _attributed(sentiment["balanced"])
    assert {row["verdict"] for row in balanced.values()} == {NO_FINDING}


@pytest.mark.slow
def test_bias_the_foundation_model_brings_and_a_clean_fine_tuning_keeps_is_inherited(sentiment, tmp_path):
    """The foundation model is the biased classifier's encoder (its features carry the reviewer's gender); a clean
    fine-tuning at a low rate keeps its bias: P (frozen, head trained on the clean data) and F fail alike."""
    biased = LoadedRun.load(sentiment["biased"].path)
    base = tmp_path / "biased_foundation"
    biased.model.base_model.save_pretrained(base)
    biased.tokenizer.save_pretrained(base)
    run, _ = train_tiny(
        tmp_path / "run",
        "classification",
        f"dataset.data_dir={sentiment['balanced_data']}",
        *PLANTED_CLASSIFIER,
        f"model.name={base}",
        "model.random_init=false",
        "model.tokenizer=null",
        "optimizer.lr=3e-4",
        "trainer.epochs=3",
    )
    _, rows = _attributed(run)
    flip = rows["bias.gender.flip_rate"]
    assert flip["verdict"] == INHERITED and flip["reference"] > 0.5 and flip["candidate"] > 0.5, flip


def test_attribution_is_asked_for_by_flag_and_its_settings_are_ranged(sentiment, capsys, tmp_path):
    from fmtool.cli import main

    path = str(sentiment["balanced"].path)
    assert main(["audit", path, "audit=[bias]", "--seeds", "2"]) == 2
    assert "--seeds is for --attribute" in capsys.readouterr().err
    assert main(["audit", path, "audit=[bias]", "--attribute", "--seeds", "11"]) == 2
    assert "attribution.seeds=11 is outside [1, 10]" in capsys.readouterr().err
    model_dir = str(sentiment["balanced"].model_dir)
    split = f"validation={sentiment['balanced_data'] / 'dev.tsv'}"
    args = ["audit", model_dir, "--task", "classification", "--split", split, "audit=[bias]", "--attribute"]
    assert main([*args, "dataset.text_column=sentence", "--output", str(tmp_path / "out")]) == 0
    assert "not measured: the probe and seed twins need the model's start and training rows" in capsys.readouterr().err
    text = (tmp_path / "out" / "report" / "report.md").read_text()
    assert "Not measured: the probe and seed twins need the model's start and training rows: give --base-model" in text
    assert main(["audit", path, "audit=[bias]", "--attribute"]) == 0
    assert "where each finding comes from (about this model" in capsys.readouterr().err
