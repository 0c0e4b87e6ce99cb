"""What AuditContext gives an audit: the loaded model, per-example losses, and twins fine-tuned from outside."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from fmtool.audit.base import AuditContext, AuditResult, check
from fmtool.errors import FmtoolError
from fmtool.pipeline import audit_context
from fmtool.predict import LoadedRun


@dataclass
class ProbeConfig:
    max_gap: float = 0.5


def memorisation_probe(ctx: AuditContext, cfg: ProbeConfig) -> AuditResult:
    """A test audit family: the loss gap between training and held-out examples, and against a twin that never saw them."""
    train, held_out = ctx.load_split("train"), ctx.load_split("validation")
    gap = np.mean([s.loss for s in ctx.score(held_out)]) - np.mean([s.loss for s in ctx.score(train)])
    twin = ctx.finetune(held_out, ["trainer.epochs=2"])
    twin_gap = np.mean([s.loss for s in ctx.score(train, model=twin)]) - np.mean([s.loss for s in ctx.score(train)])
    embeddings = ctx.model.get_input_embeddings().weight
    summary = {"loss_gap": float(gap), "twin_gap": float(twin_gap), "embedding_rows": float(embeddings.shape[0]),
               "twin_differs": float(not torch.equal(twin.get_input_embeddings().weight, embeddings))}
    return AuditResult("memorisation_probe", 1, summary, [check("loss_gap", float(gap), max_value=cfg.max_gap)])


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
    scores = ctx.score(ctx.load_split("train"))
    assert all(s.loss >= 0 and s.units >= 1 for s in scores)
    assert ctx.runtime.device.type == "cpu" and ctx.config.task.name.value == task


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
