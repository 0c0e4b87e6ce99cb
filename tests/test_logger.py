"""Trackers: TensorBoard event files that tensorboard's own reader reads, an MLflow run in a local file store with
the config, the curves, the audit figures and the report; a missing package fails validation naming the logger."""

from __future__ import annotations

import pytest

from fmtool.cli import train_and_audit
from fmtool.errors import FmtoolError
from fmtool.runs import RunDir, read_jsonl
from tests.conftest import tiny_config

_SHORT = ["audit=[data]", "trainer.epochs=2", "trainer.log_every_steps=2"]


def _train(tmp_path, *overrides):
    cfg = tiny_config("ner", *_SHORT, *overrides)
    run = RunDir.create(tmp_path / "run", cfg)
    train_and_audit(cfg, run)
    return run


def test_tensorboard_events_hold_the_curves_and_the_audit_figures(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = _train(tmp_path, "logger=tensorboard")
    events = EventAccumulator(str(run.path / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    train_steps = [r["step"] for r in read_jsonl(run.metrics_file) if r["split"] == "train"]
    assert len(train_steps) >= 2
    assert [e.step for e in events.Scalars("train/loss")] == train_steps
    assert {"train/lr", "train/grad_norm", "validation/f1", "audit/data/passed"} <= scalars
    assert any(tag.startswith("audit/data/") and tag != "audit/data/passed" for tag in scalars)
    assert {"config/text_summary", "report/text_summary", "status/text_summary"} <= set(events.Tags()["tensors"])


def test_mlflow_run_in_a_local_file_store_has_params_curves_audits_and_the_report(tmp_path):
    import mlflow

    uri = (tmp_path / "mlruns").as_uri()
    run = _train(tmp_path, "logger=mlflow", f"logger.tracking_uri={uri}", "logger.experiment=tests")
    client = mlflow.MlflowClient(tracking_uri=uri)
    (found,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert found.info.run_name == run.path.name and found.info.status == "FINISHED"
    assert (
        found.data.params["task.name"] == "ner"
        and float(found.data.params["optimizer.lr"]) == run.load_config().optimizer.lr
    )
    history = client.get_metric_history(found.info.run_id, "train/loss")
    assert [m.step for m in history] == [r["step"] for r in read_jsonl(run.metrics_file) if r["split"] == "train"]
    assert "validation/f1" in found.data.metrics and found.data.metrics["audit/data/passed"] in (0.0, 1.0)
    assert found.data.tags["fmtool.audit_status"] in {"pass", "fail", "inconclusive"}
    artifacts = {a.path for a in client.list_artifacts(found.info.run_id)} | {
        a.path for a in client.list_artifacts(found.info.run_id, "report")
    }
    assert {
        "config.yaml",
        "metrics.jsonl",
        "report/report.html",
        "report/report.json",
        "report/model_card.md",
    } <= artifacts


def test_a_missing_tracker_package_fails_validation_naming_the_logger(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(
        FmtoolError, match=r"logger=mlflow: the mlflow package is not installed \(pip install 'fmtool\[tracking\]'\)"
    ):
        tiny_config("ner", "logger=mlflow")


def test_a_tracker_that_cannot_start_fails_the_run_in_one_line(tmp_path):
    cfg = tiny_config("ner", *_SHORT, "logger=mlflow", "logger.tracking_uri=file:/proc/no-such-store")
    run = RunDir.create(tmp_path / "run", cfg)
    with pytest.raises(FmtoolError, match=r"^logger=mlflow: cannot start \("):
        train_and_audit(cfg, run)
    assert run.status()["state"] == "failed"


def test_a_tracker_failing_mid_run_stops_tracking_not_training(caplog):
    from fmtool.logger import GuardedTracker

    class Broken:
        calls = 0

        def log_metrics(self, record):
            Broken.calls += 1
            raise ConnectionError("tracking server went away")

    tracker = GuardedTracker(Broken(), "mlflow")
    for step in range(3):
        tracker.log_metrics({"split": "train", "step": step, "loss": 1.0})
    tracker.close("complete")
    assert Broken.calls == 1 and "logger=mlflow failed (tracking server went away)" in caplog.text
