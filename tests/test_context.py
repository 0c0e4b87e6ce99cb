"""What AuditContext gives an audit: the loaded model, per-example losses, and twins fine-tuned from outside."""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from fmtool.audit.base import AuditContext, AuditResult, check
from fmtool.auditing import audit_context
from fmtool.errors import FmtoolError
from fmtool.predict import LoadedRun
from tests.conftest import tiny_config


@dataclass
class ProbeConfig:
    max_gap: float = 0.5


def memorisation_probe(ctx: AuditContext, cfg: ProbeConfig) -> AuditResult:
    """A test audit family: the loss gap between training and held-out examples, and against a twin that never saw
    them."""
    train, held_out = ctx.load_split("train"), ctx.load_split("validation")
    gap = np.mean([s.loss for s in ctx.score(held_out)]) - np.mean([s.loss for s in ctx.score(train)])
    twin = ctx.finetune(held_out, ["trainer.epochs=2"])
    twin_gap = np.mean([s.loss for s in ctx.score(train, model=twin)]) - np.mean([s.loss for s in ctx.score(train)])
    embeddings = ctx.model.get_input_embeddings().weight
    summary = {
        "loss_gap": float(gap),
        "twin_gap": float(twin_gap),
        "embedding_rows": float(embeddings.shape[0]),
        "twin_differs": float(not torch.equal(twin.get_input_embeddings().weight, embeddings)),
    }
    return AuditResult(summary, [check("loss_gap", float(gap), max_value=cfg.max_gap)])


@pytest.mark.parametrize("task", ["ner", "classification"])
def test_a_family_reads_the_model_losses_and_fine_tunes_a_twin(task, ner_run, classification_run):
    run, _ = ner_run if task == "ner" else classification_run
    loaded = LoadedRun.load(run.path)
    ctx = audit_context(loaded)
    result = memorisation_probe(ctx, ProbeConfig())
    assert result.summary["embedding_rows"] == len(ctx.tokenizer)
    assert result.summary["twin_differs"] == 1.0
    # these runs memorised their training sentences (evaluated on the same ones), so their losses are near 0,
    # while a twin that never saw them scores them worse
    assert result.summary["twin_gap"] > 0.1
    train = ctx.load_split("train")
    scores = ctx.score(train)
    # one unit per labelled word (NER) or per text, and the trained rows' losses below chance's (ln 2 and more)
    assert [s.units for s in scores] == [len(e.tokens) if task == "ner" else 1 for e in train]
    assert np.mean([s.loss for s in scores]) < 0.6
    assert ctx.runtime.device.type == "cpu" and ctx.config.task.name == task


def test_per_example_loss_is_the_gold_labels_mean_negative_log_likelihood(classification_run):
    run, _ = classification_run
    loaded = LoadedRun.load(run.path)
    ctx = audit_context(loaded)
    examples = ctx.load_split("validation")[:5]
    expected = [-np.log(p.probabilities[e.label]) for e, p in zip(examples, ctx.predict(examples))]
    assert [s.loss for s in ctx.score(examples)] == pytest.approx(expected, rel=1e-3, abs=1e-4)


def test_scoring_labels_the_model_does_not_know_names_them(ner_run):
    run, _ = ner_run
    ctx = audit_context(LoadedRun.load(run.path))
    example = ctx.load_split("validation")[0]
    from dataclasses import replace

    with pytest.raises(FmtoolError, match="B-NOPE"):
        ctx.score([replace(example, tags=["B-NOPE"] + example.tags[1:])])


def _undeduplicated(loaded: LoadedRun, examples):
    features = loaded.task.encode(examples, loaded.tokenizer, None, loaded.cfg.trainer)
    return loaded.task.predict(loaded.model, examples, features, loaded.runtime, loaded.tokenizer.pad_token_id)


@pytest.mark.parametrize("fixture", ["ner_run", "classification_run"])
def test_inputs_the_uncased_tokenizer_cannot_tell_apart_are_predicted_once(fixture, request, monkeypatch):
    from fmtool.dataset.examples import TextExample, TokenExample
    from fmtool.predict import distinct_inputs

    run, _ = request.getfixturevalue(fixture)
    loaded = LoadedRun.load(run.path)
    original = loaded.run.load_split("validation")[0]
    if isinstance(original, TokenExample):
        variants = [
            dataclasses.replace(original, tokens=[w.upper() for w in original.tokens]),
            dataclasses.replace(original, tokens=[w + "\u200b" for w in original.tokens]),
            dataclasses.replace(original, tokens=["[MASK]", *original.tokens[1:]]),
            dataclasses.replace(original, tokens=["[mask]", *original.tokens[1:]]),
            dataclasses.replace(original, tokens=["zebra", *original.tokens[1:]]),
        ]
    else:
        variants = [
            TextExample(id="u", text=original.text.upper(), label=original.label),
            TextExample(id="z", text=original.text.replace(" ", " \u200b"), label=original.label),
            TextExample(id="m", text="[MASK] " + original.text, label=original.label),
            TextExample(id="l", text="[mask] " + original.text, label=original.label),
            TextExample(id="d", text="zebra " + original.text, label=original.label),
        ]
    examples = [original, *variants]
    distinct, position = distinct_inputs(examples, loaded.tokenizer)
    # the upper-cased and zero-width copies are the original to an uncased BERT; [MASK] is an added token, [mask] is not
    assert position == [0, 0, 0, 1, 2, 3] and len(distinct) == 4
    seen = []
    predict = loaded.task.predict
    monkeypatch.setattr(
        loaded.task,
        "predict",
        lambda model, batch, *rest, **kw: seen.append(len(batch)) or predict(model, batch, *rest, **kw),
    )
    shared = loaded.predictions(examples)
    assert seen == [4]
    alone = _undeduplicated(loaded, examples)
    decided = (lambda p: p.tags) if isinstance(original, TokenExample) else (lambda p: p.label)
    assert [decided(p) for p in shared] == [decided(p) for p in alone]
    confidence = (
        (lambda p: p.scores) if isinstance(original, TokenExample) else (lambda p: list(p.probabilities.values()))
    )
    assert np.allclose([confidence(p) for p in shared], [confidence(p) for p in alone], atol=1e-5)


def test_audits_share_the_audited_models_predictions_but_not_other_models(ner_run, monkeypatch):
    run, _ = ner_run
    loaded = LoadedRun.load(run.path)
    ctx = audit_context(loaded)
    validation = ctx.load_split("validation")
    first, second = validation[:3], validation[1:5]
    shouted = [dataclasses.replace(e, tokens=[w.upper() for w in e.tokens]) for e in validation[:2]]
    expected = loaded.predictions([*first, *second, *shouted])
    seen = []
    predict = loaded.task.predict
    monkeypatch.setattr(
        loaded.task,
        "predict",
        lambda model, batch, *rest, **kw: seen.append(len(batch)) or predict(model, batch, *rest, **kw),
    )
    got = ctx.predict(first) + ctx.predict(second) + ctx.predict(shouted)
    # the second family runs only the two sentences the first did not ask about; the upper-cased copies, the
    # originals to an uncased model, run not at all
    assert seen == [3, 2]
    assert [p.tags for p in got] == [p.tags for p in expected]
    twin = loaded.model
    ctx.predict(first, model=twin)
    assert seen == [3, 2, 3]


@pytest.mark.slow
@pytest.mark.parametrize("task", ["ner", "classification"])
def test_a_model_directory_audited_on_given_splits_matches_its_run(task, ner_run, classification_run, tmp_path):
    """The same model read as a bare directory with its data handed in gives the run's audit figures; a twin,
    whose starting point a bare directory does not record, is trained only from a named base model."""
    from fmtool.auditing import audit_loaded

    run, _ = ner_run if task == "ner" else classification_run
    audit = {
        "robustness": {"tests": ["add_typo", "strip_punctuation"]},
        "calibration": {"min_examples": 10},
        "membership": {"min_examples": 8, "attacks": ["loss"]},
    }
    from_run = audit_loaded(LoadedRun.load(run.path), audit, tmp_path / "run")
    splits = {name: run.load_split(name) for name in run.splits()}
    bare = LoadedRun.from_model_dir(run.model_dir, task)
    from_dir = audit_loaded(bare, audit, tmp_path / "dir", splits=splits)
    by_name = [{entry["name"]: entry for entry in report["audits"]} for report in (from_run, from_dir)]
    for family in ("robustness", "calibration", "membership"):
        assert by_name[1][family]["summary"] == pytest.approx(by_name[0][family]["summary"], abs=1e-6), family
    membership = {
        "membership": {"min_examples": 8, "attacks": ["loss", "reference"], "reference_overrides": ["trainer.epochs=1"]}
    }
    unknown_start = audit_loaded(bare, membership, tmp_path / "twinless", splits=splits)["audits"][0]
    assert "loss.auc" in unknown_start["summary"] and "reference.auc" not in unknown_start["summary"]
    assert [c["status"] for c in unknown_start["checks"] if c["name"] == "reference.auc"] == ["skip"]
    assert any("--base-model" in w for w in unknown_start["warnings"])
    # the tiny runs start from random weights: their starting point, saved, is the base model
    from fmtool.model import load_tokenizer
    from fmtool.twins import starting_model

    cfg, base = LoadedRun.load(run.path).cfg, tmp_path / "base_model"
    starting_model(cfg, bare.labels).save_pretrained(base)
    load_tokenizer(cfg.model).save_pretrained(base)
    with_base = audit_loaded(bare, membership, tmp_path / "base", splits=splits, base_model=str(base))
    assert [c["status"] for c in with_base["audits"][0]["checks"] if c["name"] == "reference.auc"] != ["skip"]
    assert with_base["provenance"]["base_model"]["path"] == str(base)
    assert f"base model (--base-model): {base}" in (tmp_path / "base" / "report" / "report.md").read_text()
    # MiniLM shares the tiny model's tokenizer but not its shapes: refused before any family runs
    with pytest.raises(
        FmtoolError, match=r"--base-model .*cannot have been fine-tuned from it \(hidden_size 384 against 32"
    ):
        audit_loaded(bare, membership, tmp_path / "minilm", splits=splits, base_model=cfg.model.tokenizer)
    assert not (tmp_path / "minilm").exists()
    other_vocabulary = tmp_path / "other_vocabulary"
    shutil.copytree(base, other_vocabulary)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (other_vocabulary / name).unlink(missing_ok=True)
    load_tokenizer(tiny_config("ner", "model=tiny_gpt").model).save_pretrained(other_vocabulary)
    with pytest.raises(FmtoolError, match=r"--base-model .*\(a tokenizer of \d+ tokens against"):
        audit_loaded(bare, membership, tmp_path / "bpe", splits=splits, base_model=str(other_vocabulary))
    with pytest.raises(FmtoolError, match=r"audit.robustness.splits: test not available \(splits: train, validation\)"):
        audit_loaded(bare, {"robustness": {"splits": ["test"]}}, tmp_path / "missing", splits=splits)
