"""The training loop: one explicit function, no callback framework.

Per optimizer update: forward under autocast, loss scaled for gradient accumulation, gradient
clipping, optimizer and scheduler step. Evaluation runs every trainer.eval_every_steps updates (or at
each epoch's end); the best weights by trainer.metric are kept and restored at the end, and training
stops early once trainer.patience evaluations in a row bring no improvement.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol, Sequence

import torch

from fmtool.config.schema import Batching, OptimizerConfig, SchedulerConfig, TrainerConfig
from fmtool.dataset.batching import Feature, collate, train_batches
from fmtool.errors import FmtoolError
from fmtool.inference import Runtime
from fmtool.optimizer import build_optimizer
from fmtool.scheduler import build_scheduler
from fmtool.task.base import headline

log = logging.getLogger(__name__)

_UNKNOWN_METRIC = "trainer.metric='{0}' is not among the evaluation metrics: {1}"


class Progress(Protocol):
    def start(self, description: str, total: int) -> None: ...
    def advance(self, n: int = 1, **fields: Any) -> None: ...
    def stop(self) -> None: ...


class SilentProgress:
    def start(self, description: str, total: int) -> None:
        pass

    def advance(self, n: int = 1, **fields: Any) -> None:
        pass

    def stop(self) -> None:
        pass


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    best_metric: Optional[float] = None
    best_step: int = 0
    stale_evaluations: int = 0
    stopped_early: bool = False
    train_samples: int = 0
    train_seconds: float = 0.0
    evaluations: list[dict[str, Any]] = field(default_factory=list)


def updates_per_epoch(n_features: int, cfg: TrainerConfig) -> int:
    return math.ceil(math.ceil(n_features / cfg.batch_size) / cfg.grad_accum_steps)


def total_updates(n_features: int, cfg: TrainerConfig) -> int:
    return cfg.max_steps if cfg.max_steps else cfg.epochs * updates_per_epoch(n_features, cfg)


def _improved(value: float, best: Optional[float], greater_is_better: bool) -> bool:
    return best is None or (value > best if greater_is_better else value < best)


def _cpu_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _record_evaluation(state: TrainState, model, metrics: dict[str, Any], cfg: TrainerConfig, best: dict) -> dict[str, Any]:
    if cfg.metric not in metrics:
        raise FmtoolError(_UNKNOWN_METRIC.format(cfg.metric, ", ".join(headline(metrics))))
    value = metrics[cfg.metric]
    if _improved(value, state.best_metric, cfg.greater_is_better):
        state.best_metric, state.best_step, state.stale_evaluations = value, state.step, 0
        best["weights"] = _cpu_copy(model)
    else:
        state.stale_evaluations += 1
    record = {"step": state.step, "epoch": state.epoch, **headline(metrics)}
    state.evaluations.append(record)
    return record


def fit(
    model: torch.nn.Module,
    features: Sequence[Feature],
    *,
    trainer: TrainerConfig,
    optimizer_cfg: OptimizerConfig,
    scheduler_cfg: SchedulerConfig,
    runtime: Runtime,
    seed: int,
    pad_id: int,
    evaluate: Callable[[torch.nn.Module], dict[str, Any]],
    on_log: Callable[[dict[str, Any]], None] = lambda record: None,
    progress: Progress = SilentProgress(),
) -> TrainState:
    """Train `model` in place on `features`; on return it holds the best weights seen."""
    model.to(runtime.device)
    optimizer = build_optimizer(model, optimizer_cfg)
    total = total_updates(len(features), trainer)
    scheduler = build_scheduler(optimizer, scheduler_cfg, total)
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.autocast_dtype == torch.float16)
    forward = torch.compile(model) if trainer.compile else model
    lengths = [len(f.input_ids) for f in features]
    state, best = TrainState(), {}
    running_loss, running_batches, evaluated_at, evaluation_seconds = 0.0, 0, -1, 0.0

    def evaluate_now() -> bool:
        nonlocal evaluated_at, evaluation_seconds
        evaluated_at = state.step
        started_evaluation = time.perf_counter()
        metrics = evaluate(model)
        evaluation_seconds += time.perf_counter() - started_evaluation
        record = _record_evaluation(state, model, metrics, trainer, best)
        on_log({"split": "validation", **record})
        log.info("eval step=<%d> %s=<%.4f> best=<%.4f>", state.step, trainer.metric, record[trainer.metric], state.best_metric)
        model.train()
        return trainer.patience is not None and state.stale_evaluations >= trainer.patience

    progress.start("train", total)
    started = time.perf_counter()
    model.train()
    optimizer.zero_grad(set_to_none=True)
    stop = False
    for epoch in range(math.ceil(total / updates_per_epoch(len(features), trainer))):
        state.epoch = epoch
        batches = train_batches(lengths, trainer.batch_size, seed=seed, epoch=epoch, grouped=trainer.batching == Batching.length_grouped)
        for position, indices in enumerate(batches):
            batch = {k: v.to(runtime.device, non_blocking=True) for k, v in collate([features[i] for i in indices], pad_id).items()}
            with runtime.autocast():
                loss = forward(**batch).loss
            scaler.scale(loss / trainer.grad_accum_steps).backward()
            running_loss += loss.item()
            running_batches += 1
            state.train_samples += len(indices)
            if (position + 1) % trainer.grad_accum_steps and position + 1 != len(batches):
                continue
            if trainer.max_grad_norm:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), trainer.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            state.step += 1
            progress.advance(1, loss=running_loss / running_batches)
            if state.step % trainer.log_every_steps == 0 or state.step == total:
                on_log({"split": "train", "step": state.step, "epoch": epoch, "loss": running_loss / running_batches, "lr": scheduler.get_last_lr()[0]})
                running_loss, running_batches = 0.0, 0
            if trainer.eval_every_steps and state.step % trainer.eval_every_steps == 0:
                stop = evaluate_now()
            if stop or state.step >= total:
                break
        if not stop and evaluated_at != state.step and (not trainer.eval_every_steps or state.step >= total):
            stop = evaluate_now()
        if stop or state.step >= total:
            break
    state.stopped_early = stop
    # throughput counts training only: evaluations are timed apart
    state.train_seconds = time.perf_counter() - started - evaluation_seconds
    progress.stop()
    if best:
        model.load_state_dict(best["weights"])
    return state

