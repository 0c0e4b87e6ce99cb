"""The training loop: one explicit function, no callback framework.

Per optimizer update: each micro-batch goes through the adversarial method (plain forward/backward
by default) under autocast, its loss weighted by its share of the update's loss units (so gradient
accumulation, data parallelism and the splitting of batches wider than the token budget all give
the one-batch gradient); then gradient clipping, optimizer
and scheduler step. Evaluation runs every trainer.eval_every_steps updates (or at each epoch's end);
the best weights by trainer.metric are kept and restored at the end, and training stops early once
trainer.patience evaluations in a row bring no improvement. With trainer.checkpoint_every_steps the
whole state is saved so `fmtool resume` continues exactly where the run stopped.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Protocol, Sequence

import torch

from fmtool.adversarial import METHODS, perturbed_embeddings
from fmtool.config.schema import AdversarialConfig, OptimizerConfig, SchedulerConfig, TrainerConfig
from fmtool.dataset.batching import BatchSource, token_budget_pieces
from fmtool.dataset.ner import IGNORE_INDEX
from fmtool.errors import FmtoolError, TrainingStopped
from fmtool.inference import Runtime
from fmtool.optimizer import build_optimizer
from fmtool.scheduler import build_scheduler
from fmtool.task.base import headline
from fmtool.trainer.checkpoint import load_checkpoint, restore_rng_states, rng_states, save_checkpoint
from fmtool.trainer.clipping import clipped_step
from fmtool.trainer.distributed import Distributed, unwrap
from fmtool.trainer import signals
from fmtool.trainer.runtime import batch_token_budget

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
    privacy: Optional[dict[str, Any]] = None  # DP-SGD runs: epsilon spent, delta, noise (trainer/private.py)


def updates_per_epoch(batches_per_epoch: Optional[int], cfg: TrainerConfig) -> Optional[int]:
    return None if batches_per_epoch is None else math.ceil(batches_per_epoch / cfg.grad_accum_steps)


def total_updates(batches_per_epoch: Optional[int], cfg: TrainerConfig) -> int:
    if cfg.max_steps:
        return cfg.max_steps
    if batches_per_epoch is None:
        raise FmtoolError("trainer.max_steps must be set when the training data is streamed (its length is unknown)")
    return cfg.epochs * updates_per_epoch(batches_per_epoch, cfg)


def _improved(value: float, best: Optional[float], greater_is_better: bool) -> bool:
    return best is None or (value > best if greater_is_better else value < best)


def _cpu_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in unwrap(model).state_dict().items()}


def _record_evaluation(state: TrainState, model, metrics: dict[str, Any], cfg: TrainerConfig, best: dict, *, final: bool) -> dict[str, Any]:
    if cfg.metric not in metrics:
        raise FmtoolError(_UNKNOWN_METRIC.format(cfg.metric, ", ".join(headline(metrics))))
    value = metrics[cfg.metric]
    if _improved(value, state.best_metric, cfg.greater_is_better):
        state.best_metric, state.best_step, state.stale_evaluations = value, state.step, 0
        best.clear()
        if not final:  # after the last evaluation the model in memory is the best: a copy would only cost memory
            best["weights"] = _cpu_copy(model)
    else:
        state.stale_evaluations += 1
    record = {"step": state.step, "epoch": state.epoch, **headline(metrics)}
    state.evaluations.append(record)
    return record


class _MicroStep:
    """adversarial.MicroStep over one rank's part of one micro-batch."""

    def __init__(self, model, batch: dict[str, torch.Tensor], weight: torch.Tensor, *, runtime: Runtime, scaler, dist: Distributed,
                 last_of_update: bool, replicated: torch.nn.Module) -> None:
        self.model, self.batch, self.weight = model, batch, weight
        self.runtime, self.scaler, self.dist, self.last_of_update = runtime, scaler, dist, last_of_update
        self.replicated = replicated  # the DDP module (not its compiled wrapper), which owns no_sync

    def zeros(self) -> torch.Tensor:
        hidden = unwrap(self.model).get_input_embeddings().embedding_dim
        return torch.zeros(*self.batch["input_ids"].shape, hidden, device=self.batch["input_ids"].device)

    def token_mask(self) -> torch.Tensor:
        return self.batch["attention_mask"].unsqueeze(-1).float()

    def _loss(self) -> torch.Tensor:
        with self.runtime.autocast():
            return self.model(**self.batch).loss

    def backward(self, delta: Optional[torch.Tensor], *, scale: float = 1.0, last: bool = True) -> torch.Tensor:
        with self.dist.no_sync(self.replicated, last and self.last_of_update), perturbed_embeddings(self.model, delta):
            loss = self._loss()
            self.scaler.scale(loss * self.weight * scale).backward()
        return loss.detach()

    def delta_grad(self, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        delta = delta.detach().requires_grad_()
        with self.dist.no_sync(self.replicated, False), perturbed_embeddings(self.model, delta):
            loss = self._loss()
            (grad,) = torch.autograd.grad(loss, delta)
        return loss.detach(), grad


def _stop_on_signal(signum: int, step: int, write_checkpoint: Optional[Callable[[int, int], None]], epoch: int, batches_done: int) -> None:
    """Checkpoint the finished update (when the run has a checkpoint folder), then stop with exit code 128 + signum."""
    if write_checkpoint is not None:
        write_checkpoint(epoch, batches_done)
    saved = "checkpoint saved; continue with fmtool resume" if write_checkpoint is not None else "nothing to resume without trainer.checkpoint_every_steps"
    raise TrainingStopped(f"interrupted by {signals.name(signum)} after update {step}: {saved}", exit_code=128 + signum)


def _with_last(batches: Iterator[list]) -> Iterator[tuple[list, bool]]:
    """Each batch with whether it is the epoch's last (streamed epochs have no length to check)."""
    previous = next(batches, None)
    for batch in batches:
        yield previous, False
        previous = batch
    if previous is not None:
        yield previous, True


def fit(
    model: torch.nn.Module,
    batches: BatchSource,
    *,
    collate: Callable[[Sequence[Any], int], dict[str, torch.Tensor]],
    trainer: TrainerConfig,
    optimizer_cfg: OptimizerConfig,
    scheduler_cfg: SchedulerConfig,
    runtime: Runtime,
    evaluate: Optional[Callable[[torch.nn.Module], dict[str, Any]]],
    adversarial: AdversarialConfig = AdversarialConfig(),
    dist: Distributed = Distributed(),
    checkpoint_dir: Optional[Path] = None,
    resume: bool = False,
    on_log: Callable[[dict[str, Any]], None] = lambda record: None,
    progress: Progress = SilentProgress(),
) -> TrainState:
    """Train `model` in place on `batches`; on return it holds the best weights seen.

    collate(features, epoch) builds one micro-batch. With evaluate=None there is no validation: the
    final weights are kept. With resume, the state in checkpoint_dir is
    restored first and the epoch continues after the last checkpointed update.
    """
    model.to(runtime.device)
    optimizer = build_optimizer(model, optimizer_cfg)
    total = total_updates(batches.batches_per_epoch, trainer)
    scheduler = build_scheduler(optimizer, scheduler_cfg, total)
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.autocast_dtype == torch.float16)
    method = METHODS.get(adversarial.name.value)
    max_batch_tokens = batch_token_budget(trainer, runtime.device)
    trained = dist.wrap(model, runtime.device)
    forward = torch.compile(trained) if trainer.compile else trained
    state, best = TrainState(), {}
    position = {"epoch": 0, "batches_done": 0, "running_loss": 0.0, "running_batches": 0, "evaluated_at": -1, "evaluation_seconds": 0.0}
    if resume:
        saved = load_checkpoint(checkpoint_dir)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        state = TrainState(**saved["state"])
        best = {"weights": saved["best_weights"]} if saved["best_weights"] is not None else {}
        position.update(saved["position"])
        restore_rng_states(saved["rng"])
        log.info("resumed at update %d (epoch %d, batch %d)", state.step, position["epoch"], position["batches_done"])

    def write_checkpoint(epoch: int, batches_done: int) -> None:
        if dist.is_main:
            save_checkpoint(checkpoint_dir, {
                "model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "state": asdict(state), "best_weights": best.get("weights"), "rng": rng_states(),
                "position": {**position, "epoch": epoch, "batches_done": batches_done},
            })
        dist.barrier()

    def evaluate_now() -> bool:
        started_evaluation = time.perf_counter()
        metrics = evaluate(model)
        position["evaluated_at"] = state.step
        position["evaluation_seconds"] += time.perf_counter() - started_evaluation
        record = _record_evaluation(state, model, metrics, trainer, best, final=state.step >= total)
        on_log({"split": "validation", **record})
        log.info("eval step=<%d> %s=<%.4f> best=<%.4f>", state.step, trainer.metric, record[trainer.metric], state.best_metric)
        model.train()
        return trainer.patience is not None and state.stale_evaluations >= trainer.patience

    progress.start("train", total)
    progress.advance(state.step)
    # throughput counts training only: evaluations are timed apart, and a resumed run adds its earlier time
    started = time.perf_counter() - state.train_seconds - position["evaluation_seconds"]
    model.train()
    optimizer.zero_grad(set_to_none=True)
    stop = False
    epoch = position["epoch"]
    while not stop and state.step < total and (trainer.max_steps or epoch < trainer.epochs):
        state.epoch = epoch
        skip = position["batches_done"] if epoch == position["epoch"] else 0
        index = -1
        for index, (global_batch, last_in_epoch) in enumerate(_with_last(batches.epoch(epoch))):
            if index < skip:
                continue
            mine = dist.shard(global_batch)
            # a rank left without examples by a batch smaller than the world still joins every collective, with weight 0
            pieces = [{k: v.to(runtime.device, non_blocking=True) for k, v in collate(piece, epoch).items()}
                      for piece in token_budget_pieces(mine or global_batch[:1], max_batch_tokens)]
            units = [piece["labels"].ne(IGNORE_INDEX).sum() * bool(mine) for piece in pieces]
            my_units = sum(units)
            batch_units = dist.all_sum(my_units.clone()).clamp_min(1)
            end_of_update = (index + 1) % trainer.grad_accum_steps == 0 or last_in_epoch
            batch_loss = 0.0
            for number, (piece, piece_units) in enumerate(zip(pieces, units)):
                weight = piece_units / batch_units * dist.world_size / trainer.grad_accum_steps
                step = _MicroStep(forward, piece, weight, runtime=runtime, scaler=scaler, dist=dist,
                                  last_of_update=end_of_update and number == len(pieces) - 1, replicated=trained)
                batch_loss += method(step, adversarial).item() * (piece_units / my_units.clamp_min(1)).item()
            if not math.isfinite(batch_loss):
                kept = f"; the last checkpoint ({checkpoint_dir}) is from before it" if checkpoint_dir is not None and trainer.checkpoint_every_steps else ""
                raise TrainingStopped(f"training stopped: the loss is {batch_loss} at update {state.step + 1} (epoch {epoch}); "
                                      f"lower optimizer.lr or check the data{kept}")
            position["running_loss"] += batch_loss
            position["running_batches"] += 1
            state.train_samples += len(global_batch)
            if not end_of_update:
                continue
            grad_norm = clipped_step(optimizer, scaler, trainer.max_grad_norm)
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            state.step += 1
            mean_loss = position["running_loss"] / position["running_batches"]
            if state.step % trainer.log_every_steps == 0 or state.step == total:
                on_log({"split": "train", "step": state.step, "epoch": epoch, "loss": mean_loss, "lr": scheduler.get_last_lr()[0],
                        **({} if grad_norm is None else {"grad_norm": grad_norm.item()})})
                position["running_loss"], position["running_batches"] = 0.0, 0
            if evaluate is not None and trainer.eval_every_steps and state.step % trainer.eval_every_steps == 0:
                stop = evaluate_now()
            if checkpoint_dir is not None and trainer.checkpoint_every_steps and state.step % trainer.checkpoint_every_steps == 0:
                state.train_seconds = time.perf_counter() - started - position["evaluation_seconds"]
                write_checkpoint(epoch, index + 1)
            progress.advance(1, loss=mean_loss)
            if signals.requested() is not None:
                _stop_on_signal(signals.requested(), state.step, write_checkpoint if checkpoint_dir is not None and trainer.checkpoint_every_steps else None,
                                epoch, index + 1)
            if stop or state.step >= total:
                break
        if index < 0:
            raise FmtoolError("the training data gave no batches: is the training file empty?")
        if evaluate is not None and not stop and position["evaluated_at"] != state.step and (not trainer.eval_every_steps or state.step >= total):
            stop = evaluate_now()
        epoch += 1
    state.stopped_early = stop
    state.train_seconds = time.perf_counter() - started - position["evaluation_seconds"]
    progress.stop()
    if best:
        model.load_state_dict(best["weights"])
    return state
