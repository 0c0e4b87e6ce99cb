"""The story of a run, top to bottom: data -> model -> before -> fit -> after -> run directory."""

from __future__ import annotations

import logging
import random
from typing import Any, Sequence

import numpy as np
import torch

from pathlib import Path

from omegaconf import OmegaConf

from fmtool.audit import AuditContext, run_audits
from fmtool.config.compose import one_line
from fmtool.config.schema import TrainConfig
from fmtool.dataset.examples import Example
from fmtool.dataset.splits import check_labels_known, label_list, load_splits
from fmtool.inference import Runtime
from fmtool.errors import FmtoolError
from fmtool.model import build_model, load_tokenizer
from fmtool.predict import LoadedRun
from fmtool.report.report import build_report, write_report
from fmtool.runs import COMPLETE, FAILED, RunDir, environment, write_json
from fmtool.task import TASKS, Task
from fmtool.task.base import headline
from fmtool.trainer import fit, resolve_runtime
from fmtool.trainer.freeze import apply_freeze
from fmtool.trainer.loop import Progress, SilentProgress

log = logging.getLogger(__name__)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def evaluate_split(task: Task, model, examples: Sequence[Example], features, runtime: Runtime, pad_id: int, labels: Sequence[str], progress: Progress, name: str) -> tuple[dict[str, Any], list]:
    progress.start(f"evaluate {name}", len(features))
    predictions = task.predict(model, examples, features, runtime, pad_id, progress.advance)
    progress.stop()
    return task.score(examples, predictions, labels), predictions


def train_pipeline(cfg: TrainConfig, run: RunDir, progress: Progress = SilentProgress()) -> dict[str, Any]:
    """Fine-tune as `cfg` says and fill `run` with the model, data, metrics and predictions."""
    set_seed(cfg.seed)
    task = TASKS.get(cfg.task.name.value)
    splits = load_splits(cfg.dataset)
    labels = label_list(splits.train)
    for name, examples in splits.named().items():
        check_labels_known(name, examples, labels)
    log.info("data=<%s> %s labels=<%d>", cfg.dataset.name, " ".join(f"{k}=<{len(v)}>" for k, v in splits.named().items()), len(labels))

    tokenizer = load_tokenizer(cfg.model)
    model = build_model(cfg.model, cfg.task.name, labels, vocab_size=len(tokenizer))
    trainable = apply_freeze(model, cfg.trainer.freeze, cfg.trainer.freeze_layers)
    runtime = resolve_runtime(cfg.trainer)
    model.to(runtime.device)
    log.info("device=<%s> autocast=<%s> trainable_parameters=<%d>", runtime.device, runtime.autocast_dtype, trainable)

    run.save_environment(environment(cfg.seed, str(runtime.device)))
    run.save_labels(labels)
    for name, examples in splits.named().items():
        run.save_split(name, examples)

    label2id = {label: i for i, label in enumerate(labels)}
    features = {name: task.encode(examples, tokenizer, label2id, cfg.trainer) for name, examples in splits.named().items()}
    evaluated = {name: splits.named()[name] for name in ("validation", "test") if name in features}

    def score(name: str) -> tuple[dict[str, Any], list]:
        return evaluate_split(task, model, evaluated[name], features[name], runtime, tokenizer.pad_token_id, labels, progress, name)

    before = {name: score(name)[0] for name in evaluated}
    state = fit(
        model, features["train"], trainer=cfg.trainer, optimizer_cfg=cfg.optimizer, scheduler_cfg=cfg.scheduler,
        runtime=runtime, seed=cfg.seed, pad_id=tokenizer.pad_token_id, evaluate=lambda m: score("validation")[0],
        on_log=run.append_metrics, progress=progress,
    )
    after = {}
    for name, examples in evaluated.items():
        after[name], predictions = score(name)
        run.save_predictions(name, (task.record(e, p) for e, p in zip(examples, predictions)))
    if cfg.trainer.save_model:
        run.save_model(model, tokenizer)
    results = {
        "task": task.name,
        "model": cfg.model.name or f"random-init {cfg.model.model_type}",
        "dataset": cfg.dataset.name,
        "labels": labels,
        "data": {name: {"examples": len(splits.named()[name]), "features": len(f)} for name, f in features.items()},
        "before": before,
        "after": after,
        "train": {
            "updates": state.step, "epochs_started": state.epoch + 1, "samples": state.train_samples,
            "seconds": round(state.train_seconds, 2), "samples_per_second": round(state.train_samples / max(state.train_seconds, 1e-9), 2),
            "best_step": state.best_step, "best_metric": {cfg.trainer.metric: state.best_metric}, "stopped_early": state.stopped_early,
            "trainable_parameters": trainable,
        },
    }
    run.save_results(results)
    return results


def _no_split(split: str) -> list[Example]:
    raise FmtoolError(f"split '{split}' needs a run directory; give this audit a data file instead")


def audit_context(loaded: LoadedRun) -> AuditContext:
    run = loaded.run
    return AuditContext(
        task=loaded.cfg.task.name.value, labels=loaded.labels, predict=loaded.predictions,
        load_split=run.load_split if run else _no_split, available_splits=run.splits() if run else [], seed=loaded.cfg.seed,
        model_dir=run.model_dir if run else Path(loaded.cfg.model.name),
    )


def _no_model(examples: Sequence[Example]) -> list:
    raise FmtoolError("this audit needs a fine-tuned NER or classification model, not a masked LM")


def masked_lm_context(model_dir: Path) -> AuditContext:
    """For audits of a plain masked-LM directory (fmtool audit DIR --task mlm)."""
    return AuditContext(task="mlm", labels=[], predict=_no_model, load_split=_no_split, available_splits=[], model_dir=model_dir)


def audit_pipeline(ctx: AuditContext, audit: dict[str, Any], out_dir: Path, *, run: RunDir | None = None, config: dict | None = None) -> dict[str, Any]:
    """Run the configured audit families, write audit/<family>.json and report/ under out_dir."""
    entries = []
    for result, settings in run_audits(ctx, audit):
        entry = {**result.to_dict(), "settings": settings}
        write_json(out_dir / "audit" / f"{result.name}.json", entry)
        entries.append(entry)
    results = run.load_results() if run else {}
    report = build_report(
        path=str(out_dir), task=ctx.task, model=results.get("model", str(ctx.model_dir)), dataset=results.get("dataset"),
        config=config or {"audit": audit}, data=results.get("data", {}),
        metrics={k: {s: headline(m) for s, m in results.get(k, {}).items()} for k in ("before", "after")}, audits=entries,
    )
    write_report(out_dir / "report", report)
    return report


def audit_loaded(loaded: LoadedRun, audit: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    config = OmegaConf.to_container(OmegaConf.structured(loaded.cfg))
    return audit_pipeline(audit_context(loaded), audit, out_dir, run=loaded.run, config=config)


def run_training(cfg: TrainConfig, run: RunDir, progress: Progress = SilentProgress()) -> dict[str, Any]:
    """train_pipeline, with the run marked complete only when every file is written."""
    try:
        results = train_pipeline(cfg, run, progress)
    except BaseException as error:
        run.finish(FAILED, error=one_line(error) or type(error).__name__)
        raise
    run.finish(COMPLETE)
    return results
