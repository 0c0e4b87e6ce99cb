"""Attributions find the word a model decides on, beat random deletion, and turn a protected word that decides
predictions into a failed shortcut check while a clean twin passes; `fmtool explain` writes terminal, JSONL and
HTML output for both tasks."""

from __future__ import annotations

import json

import pytest

from fmtool.audit import family_configs
from fmtool.auditing import audit_loaded
from fmtool.config.schema import Precision
from fmtool.errors import FmtoolError
from fmtool.explain import Target, explainer_for, targets_for
from fmtool.predict import LoadedRun
from tests.conftest import fmtool_cli, train_tiny
from tests.planted import PLANTED_CLASSIFIER, write_one_word_rule, write_sentiment

_CLASSIFIER = [*PLANTED_CLASSIFIER, "audit=none"]


def _train(tmp_path_factory, name, data):
    run, results = train_tiny(tmp_path_factory.mktemp(name), "classification", f"dataset.data_dir={data}", *_CLASSIFIER)
    assert results["after"]["validation"]["accuracy"] > 0.95
    return run.path


def _explain_audit(path, **settings):
    return audit_loaded(LoadedRun.load(path), {"explain": settings}, path)["audits"][0]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["integrated_gradients", "gradient_x_input"])
def test_the_deciding_word_is_the_top_attribution_and_beats_random_deletion(tmp_path_factory, method):
    path = _train(tmp_path_factory, "rule", write_one_word_rule(tmp_path_factory.mktemp("rule_data"), word="excellent"))
    loaded = LoadedRun.load(path)
    examples = [e for e in loaded.run.load_split("validation") if e.label == "positive"]
    explainer = explainer_for(loaded)
    explanations = explainer.explain(
        targets_for(examples, loaded.predictions(examples), False, explainer.label2id), method=method
    )
    tops = [e.target.words[e.ranked()[0]] for e in explanations]
    assert tops.count("excellent") >= 0.9 * len(tops), tops
    entry = _explain_audit(path, method=method)
    faithful = {c["name"]: c for c in entry["checks"]}
    assert (
        faithful["comprehensiveness_gain"]["status"] == "pass"
        and faithful["comprehensiveness_gain"]["interval"][0] > 0.05
    )
    assert entry["summary"]["comprehensiveness"] > entry["summary"]["comprehensiveness_random"]
    assert {"label": "positive", "word": "excellent"}.items() <= entry["tables"]["top_tokens"][
        [r["label"] for r in entry["tables"]["top_tokens"]].index("positive")
    ].items()
    assert faithful["protected_shortcut"]["status"] != "fail"  # "excellent" is no protected attribute


@pytest.mark.slow
def test_a_gendered_shortcut_fails_and_a_clean_twin_passes(tmp_path_factory):
    biased = _explain_audit(
        _train(tmp_path_factory, "biased", write_sentiment(tmp_path_factory.mktemp("biased_data"), biased=True))
    )
    clean = _explain_audit(
        _train(tmp_path_factory, "clean", write_sentiment(tmp_path_factory.mktemp("clean_data"), biased=False))
    )
    shortcut = {c["name"]: c for c in biased["checks"]}["protected_shortcut"]
    assert biased["status"] == "fail" and shortcut["status"] == "fail", shortcut
    worst = biased["tables"]["protected_shortcuts"][0]
    assert worst["group"].startswith("gender:") and worst["example"] and worst["word"] in worst["example"].split()
    assert {c["name"]: c for c in clean["checks"]}["protected_shortcut"]["status"] == "pass", clean["checks"]
    assert clean["status"] == "pass"


@pytest.mark.slow
def test_explain_cli_gives_ner_entities_their_word_attributions(ner_run, tmp_path):
    run, _ = ner_run
    text = " ".join(run.load_split("validation")[0].tokens)
    html = tmp_path / "out" / "explain.html"
    result = fmtool_cli("explain", str(run.path), text, "--output", "-", "--html", str(html), "--steps", "8")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records, "the overfitted tagger finds the entities of a training sentence"
    for record in records:
        assert [w["word"] for w in record["words"]] == text.split()
        assert record["entity"]["text"] == " ".join(
            text.split()[record["entity"]["first_word"] : record["entity"]["last_word"] + 1]
        )
        assert "convergence_delta" in record
    assert html.read_text().count('class="attribution"') == len(records) and "<script" not in html.read_text()


@pytest.mark.slow
def test_explain_cli_colours_classification_in_the_terminal(classification_run):
    run, _ = classification_run
    text = run.load_split("validation")[0].text
    result = fmtool_cli("explain", str(run.path), text, "--method", "gradient_x_input")
    assert result.returncode == 0, result.stderr
    assert text.split()[0] in result.stdout and "(" in result.stdout.splitlines()[0]
    missing = fmtool_cli("explain", str(run.path), "--file", "no/such/file.txt")
    assert (
        missing.returncode == 2
        and missing.stderr.strip() == "fmtool: error: explain: --file no/such/file.txt not found"
    )


@pytest.mark.parametrize(
    "settings, key",
    [
        ({"method": "shap"}, r"audit.explain.method: unknown method 'shap'"),
        ({"shares": [0.0, 0.5]}, r"audit.explain.shares"),
    ],
)
def test_bad_explain_settings_name_the_key(settings, key):
    with pytest.raises(FmtoolError, match=key):
        family_configs({"explain": settings})


def _captum_reference(explainer, target, method, steps):
    """Word attributions and delta of one target by Captum's own layer attributions, one call per target."""
    import torch
    from captum.attr import LayerGradientXActivation, LayerIntegratedGradients

    encoded = explainer._encode([target], [target.words])
    ids, mask, select = encoded["input_ids"], encoded["attention_mask"], encoded["select"][:, None]

    def score(input_ids, attention_mask):
        return explainer._scores(input_ids, attention_mask, select.expand(len(input_ids), *select.shape[1:]))[:, 0]

    layer = explainer.model.get_input_embeddings()
    if method == "gradient_x_input":
        attributions, delta = (
            LayerGradientXActivation(score, layer).attribute(ids, additional_forward_args=(mask,)),
            None,
        )
    else:
        special = torch.isin(ids, torch.tensor(explainer.tokenizer.all_special_ids))
        baseline = torch.where(special, ids, torch.full_like(ids, explainer.tokenizer.pad_token_id))
        attributions, delta = LayerIntegratedGradients(score, layer).attribute(
            ids, baselines=baseline, additional_forward_args=(mask,), n_steps=steps, return_convergence_delta=True
        )
        delta = float(delta.abs())
    return explainer._per_word(attributions.detach().sum(-1)[0], encoded.word_ids(0), len(target.words)), delta


@pytest.mark.parametrize("method", ["integrated_gradients", "gradient_x_input"])
def test_shared_forward_attributions_equal_captums_for_every_entity_of_a_sentence(ner_run, method):
    run, _ = ner_run
    explainer = explainer_for(LoadedRun.load(run.path, precision=Precision.fp32))
    sentences = [tuple(e.tokens) for e in run.load_split("validation")[:3] if len(e.tokens) >= 4]
    # several entities per sentence (the shared forward pass) and one alone, with labels the model may not predict
    targets = [
        Target(f"s{i}", words, label, -1, span)
        for i, words in enumerate(sentences)
        for label, span in (("PER", (0, 0)), ("LOC", (1, 2)), ("ORG", (len(words) - 1, len(words) - 1)))
    ][:-2]
    explanations = explainer.explain(targets, method=method, steps=6)
    for target, explanation in zip(targets, explanations):
        assert explanation.target == target
        expected, delta = _captum_reference(explainer, target, method, 6)
        assert explanation.attributions == pytest.approx(expected, abs=1e-4)
        assert (explanation.delta is None) == (delta is None) and (
            delta is None or explanation.delta == pytest.approx(delta, abs=1e-4)
        )


def test_explain_audit_runs_on_a_ner_run(ner_run):
    run, _ = ner_run
    entry = _explain_audit(run.path, steps=4, max_examples=12)
    assert entry["summary"]["explained"] >= 12 and {c["name"] for c in entry["checks"]} == {
        "comprehensiveness_gain",
        "sufficiency_gain",
        "protected_shortcut",
    }
    assert all("entity" in row for row in entry["tables"]["explanations"])
