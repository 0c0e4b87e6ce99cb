"""Every audited run gets a model card (Hugging Face layout) in report/ and as model/README.md, carrying the
evaluation and the audit findings, failed checks named."""

from __future__ import annotations

import shutil

from fmtool.auditing import audit_loaded
from fmtool.predict import LoadedRun


def test_the_model_card_names_the_failed_checks_and_travels_with_the_model(classification_run, tmp_path):
    run, _ = classification_run
    copy = tmp_path / "run"
    shutil.copytree(run.path, copy)
    # the overfitting fixture evaluates on its training rows: the data audit's leakage check fails
    audit_loaded(LoadedRun.load(copy), {"data": {}}, copy)
    card = (copy / "report" / "model_card.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: text-classification\n")
    assert "## Evaluation results" in card and "| validation | accuracy |" in card
    assert "- fail: `leakage_rate`" in card and "## Bias, risks and limitations" in card
    assert (copy / "model" / "README.md").read_text() == card
    assert str(tmp_path) not in card  # no path of the training machine
