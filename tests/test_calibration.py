"""The calibration audit fails a model made over-confident and passes the model it came from."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from fmtool.audit.calibration import calibration_error, fit_temperature
from fmtool.auditing import audit_loaded
from fmtool.predict import LoadedRun
from fmtool.runs import RunDir
from tests.conftest import train_tiny
from tests.planted import PLANTED_TSV, write_sentiment

_CLASSIFIER = [
    *PLANTED_TSV,
    "optimizer.lr=2e-3",
    "trainer.epochs=4",
    "scheduler.warmup_ratio=0",
    "audit=none",
]


def _calibration(path):
    loaded = LoadedRun.load(path)
    return audit_loaded(loaded, {"calibration": {}}, path)["audits"][0]


@pytest.fixture(scope="module")
def calibrated_and_overconfident(tmp_path_factory):
    # a fifth of the labels are flipped, so no model is right more than ~80% of the time
    data = write_sentiment(tmp_path_factory.mktemp("noisy"), biased=False, size=1200, label_noise=0.2)
    run, _ = train_tiny(
        tmp_path_factory.mktemp("calibrated"), "classification", f"dataset.data_dir={data}", *_CLASSIFIER
    )
    over = tmp_path_factory.mktemp("overconfident") / "run"
    shutil.copytree(run.path, over)
    model = LoadedRun.load(over).model
    with torch.no_grad():
        for parameter in model.classifier.parameters():
            parameter.mul_(25.0)  # logits x25: the same decisions, near-certain confidence
    model.save_pretrained(RunDir(over).model_dir)
    return run.path, over


@pytest.mark.slow
def test_an_overconfident_model_fails_and_its_original_passes(calibrated_and_overconfident):
    calibrated, over = calibrated_and_overconfident
    good, bad = _calibration(calibrated), _calibration(over)
    assert bad["status"] == "fail" and bad["summary"]["ece"] > 0.1, bad["summary"]
    assert good["status"] == "pass", good["summary"]
    assert bad["summary"]["temperature"] > 5 * good["summary"]["temperature"]
    assert bad["summary"]["ece_after_temperature"] < bad["summary"]["ece"] / 2
    assert sum(row["count"] for row in good["tables"]["reliability"]) == good["summary"]["count"] == 400


def test_small_samples_are_skipped_with_the_reason(classification_run):
    run, _ = classification_run
    entry = _calibration(run.path)
    assert entry["status"] == "skip" and "fewer than min_examples=300" in entry["warnings"][0]


def test_ece_of_hand_made_bins():
    confidence = np.array([0.95, 0.95, 0.55, 0.55])
    correct = np.array([1.0, 0.0, 1.0, 1.0])
    ece, mce, rows = calibration_error(confidence, correct, 10)
    # bin 9: confidence 0.95, accuracy 0.5 (gap 0.45); bin 5: 0.55 vs 1.0 (gap 0.45)
    assert ece == pytest.approx(0.45) and mce == pytest.approx(0.45) and [r["bin"] for r in rows] == [5, 9]
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    assert 0.05 < fit_temperature(probabilities, np.array([0, 1, 1, 0])) < 20
