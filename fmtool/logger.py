"""Experiment tracking beside the run directory: TensorBoard event files or an MLflow run (`logger=...`).

metrics.jsonl is always written (it is the run's own record, the `csv` logger of lightning-hydra-template);
a tracker mirrors it as training goes, then receives the run's final figures, the audit checks and the report.
Trackers live at the edge (`fmtool train` / `fmtool resume`): the pipeline only calls `on_log(record)`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any, Optional, Protocol

from fmtool.config.schema import LoggerConfig, LoggerName
from fmtool.errors import FmtoolError
from fmtool.runs import RunDir, read_json, write_json

log = logging.getLogger(__name__)

# the package each tracker needs, and the extra that installs it
_PACKAGES = {LoggerName.tensorboard: ("tensorboard", "tracking"), LoggerName.mlflow: ("mlflow", "tracking")}
_UNTRACKED = ("split", "step", "epoch")


class Tracker(Protocol):
    def log_metrics(self, record: dict[str, Any]) -> None: ...

    def log_outcome(self, run: RunDir, report: Optional[dict[str, Any]]) -> None: ...

    def close(self, status: str) -> None: ...


def check_installed(cfg: LoggerConfig) -> Optional[str]:
    """The problem with `cfg` on this machine, if any (validate() reports it before a run directory exists)."""
    if cfg.name not in _PACKAGES:
        return None
    package, extra = _PACKAGES[cfg.name]
    if importlib.util.find_spec(package) is None:
        return f"logger={cfg.name}: the {package} package is not installed (pip install 'fmtool[{extra}]')"
    return None


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """A metrics.jsonl record as tracker scalars named split/key (train/loss, validation/f1)."""
    split = record.get("split", "train")
    return {
        f"{split}/{key}": float(value)
        for key, value in record.items()
        if key not in _UNTRACKED and isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def final_scalars(report: dict[str, Any]) -> dict[str, float]:
    """The report's figures as scalars: every audit check's value and the audit's pass (1) or not (0)."""
    out: dict[str, float] = {}
    for audit in report.get("audits", []):
        out[f"audit/{audit['name']}/passed"] = 1.0 if audit["status"] == "pass" else 0.0
        for check in audit.get("checks", []):
            if isinstance(check.get("value"), (int, float)):
                out[f"audit/{audit['name']}/{check['name']}"] = float(check["value"])
    return out


def flat_params(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as dotted keys, the way sweeps name them (optimizer.lr)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat_params(value, f"{name}."))
        else:
            out[name] = str(value)
    return out


class NoTracker:
    def log_metrics(self, record: dict[str, Any]) -> None:
        pass

    def log_outcome(self, run: RunDir, report: Optional[dict[str, Any]]) -> None:
        pass

    def close(self, status: str) -> None:
        pass


class TensorBoardTracker:
    """Event files in RUN_DIR/tensorboard: `tensorboard --logdir runs/` shows every run, sweeps included."""

    def __init__(self, run: RunDir, config: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run.tensorboard_dir))
        self.step = 0
        self.writer.add_text("config", _code_block(run.config_file.read_text(encoding="utf-8")))

    def log_metrics(self, record: dict[str, Any]) -> None:
        self.step = int(record.get("step", self.step))
        for tag, value in scalars(record).items():
            self.writer.add_scalar(tag, value, self.step)

    def log_outcome(self, run: RunDir, report: Optional[dict[str, Any]]) -> None:
        if report is None:
            return
        for tag, value in final_scalars(report).items():
            self.writer.add_scalar(tag, value, self.step)
        if run.report_markdown.is_file():
            self.writer.add_text("report", run.report_markdown.read_text(encoding="utf-8"), self.step)

    def close(self, status: str) -> None:
        self.writer.add_text("status", status, self.step)
        self.writer.close()


class MlflowTracker:
    """One MLflow run per fmtool run (resume continues it): params, live metrics, audit figures, report files."""

    def __init__(self, run: RunDir, config: dict[str, Any], cfg: LoggerConfig) -> None:
        import mlflow

        uri = cfg.tracking_uri or (Path.cwd() / "mlruns").as_uri()
        if uri.startswith("file:"):
            # MLflow 3 keeps the file store only behind this opt-in; a local mlruns/ needs no server or database
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = mlflow.MlflowClient(tracking_uri=uri)
        marker = run.mlflow_file
        if marker.is_file():
            self.run_id = read_json(marker)["run_id"]
        else:
            experiment = self.client.get_experiment_by_name(cfg.experiment)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(cfg.experiment)
            self.run_id = self.client.create_run(
                experiment_id, run_name=run.path.name, tags={"fmtool.run_dir": str(run.path.resolve())}
            ).info.run_id
            write_json(marker, {"tracking_uri": uri, "run_id": self.run_id})
            params = flat_params(config)
            for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
                batch = list(params.items())[start : start + 100]
                self.client.log_batch(self.run_id, params=[mlflow.entities.Param(k, v[:6000]) for k, v in batch])
        log.info("mlflow run %s at %s", self.run_id, uri)

    def log_metrics(self, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        step, now = int(record.get("step", 0)), _millis()
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in scalars(record).items()])

    def log_outcome(self, run: RunDir, report: Optional[dict[str, Any]]) -> None:
        from mlflow.entities import Metric

        now = _millis()
        if report is not None:
            self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, 0) for k, v in final_scalars(report).items()])
            self.client.set_tag(self.run_id, "fmtool.audit_status", report.get("status", ""))
        for path in (run.config_file, run.results_file, run.metrics_file):
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))
        if run.report_dir.is_dir():
            self.client.log_artifacts(self.run_id, str(run.report_dir), artifact_path="report")

    def close(self, status: str) -> None:
        self.client.set_terminated(
            self.run_id, status={"complete": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED")
        )


class GuardedTracker:
    """A tracker whose failures (a tracking server gone away, a full disk) are logged once and end tracking,
    never the training run: metrics.jsonl keeps the record either way."""

    def __init__(self, tracker: Tracker, name: str) -> None:
        self.tracker, self.name = tracker, name

    def _call(self, method: str, *args: Any) -> None:
        try:
            getattr(self.tracker, method)(*args)
        except Exception as error:  # any tracker library error; the run itself must go on
            log.warning(
                "logger=%s failed (%s); tracking stops, metrics.jsonl goes on",
                self.name,
                str(error).splitlines()[0] if str(error) else type(error).__name__,
            )
            self.tracker = NoTracker()

    def log_metrics(self, record: dict[str, Any]) -> None:
        self._call("log_metrics", record)

    def log_outcome(self, run: RunDir, report: Optional[dict[str, Any]]) -> None:
        self._call("log_outcome", run, report)

    def close(self, status: str) -> None:
        self._call("close", status)


def open_tracker(cfg: LoggerConfig, run: RunDir, config: dict[str, Any]) -> Tracker:
    """The configured tracker; one that cannot start (an unreachable tracking server) is a one-line FmtoolError."""
    problem = check_installed(cfg)
    if problem:
        raise FmtoolError(problem)
    try:
        if cfg.name == LoggerName.tensorboard:
            return GuardedTracker(TensorBoardTracker(run, config), cfg.name.value)
        if cfg.name == LoggerName.mlflow:
            return GuardedTracker(MlflowTracker(run, config, cfg), cfg.name.value)
    except Exception as error:  # the tracker libraries raise their own types
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise FmtoolError(f"logger={cfg.name}: cannot start ({first})") from None
    return NoTracker()


def _code_block(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def _millis() -> int:
    import time

    return int(time.time() * 1000)
