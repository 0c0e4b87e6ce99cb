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
from fmtool.dataset.examples import labelled_positions
from fmtool.errors import FmtoolError, TrainingStopped, one_line
from fmtool.inference import Runtime
from fmtool.model.build import unwrap
from fmtool.optimizer import build_optimizer
from fmtool.scheduler import build_scheduler
from fmtool.task.base import headline
from fmtool.trainer import signals
from fmtool.trainer.checkpoint import load_checkpoint, restore_rng_states, rng_states, save_checkpoint
from fmtool.trainer.clipping import clipped_step
from fmtool.trainer.distributed import Distributed, equal_pieces, full_state_dict
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


@dataclass
class LoopPosition:
    """Where the loop stands inside the run, checkpointed with TrainState so a resumed run continues mid-epoch."""

    epoch: int = 0
    batches_done: int = 0  # in `epoch`
    running_loss: float = 0.0  # summed over the batches since the last train log record
    running_batches: int = 0
    evaluated_at: int = -1  # the update of the last evaluation
    evaluation_seconds: float = 0.0  # kept out of the training throughput


def _weight_settings(trainer: TrainerConfig) -> dict[str, Any]:
    """The trainer settings that decide which weights a checkpoint holds: an edit to one of them between a stop and
    fmtool resume is named instead of failing in load_state_dict."""
    lora = trainer.lora
    return {
        "peft": trainer.peft.value,
        "lora.r": lora.r,
        "lora.target_modules": list(lora.target_modules) if lora.target_modules is not None else None,
        "freeze": trainer.freeze.value,
        "freeze_layers": trainer.freeze_layers,
    }


class _Training:
    """The module trained (the model, or its sharded copy) with its optimizer, scheduler, grad scaler, state and best
    weights: what fit() updates and checkpoints."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer_cfg: OptimizerConfig,
        scheduler_cfg: SchedulerConfig,
        total: int,
        runtime: Runtime,
        dist: Distributed,
        trainer: TrainerConfig,
        loss_units: Callable[[torch.Tensor], torch.Tensor],
    ) -> None:
        self.runtime, self.dist, self.loss_units = runtime, dist, loss_units
        self.replicated = dist.wrap(model, runtime.device, trainer.strategy)  # owns DDP's no_sync
        self.model = unwrap(self.replicated)
        self.sharded = self.model is not model
        self.optimizer = build_optimizer(self.model, optimizer_cfg)
        self.scheduler = build_scheduler(self.optimizer, scheduler_cfg, total)
        self.scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.autocast_dtype == torch.float16)
        self.forward = torch.compile(self.replicated) if trainer.compile else self.replicated
        self.state, self.position = TrainState(), LoopPosition()
        self.best_weights: Optional[dict[str, torch.Tensor]] = None
        self.settings = _weight_settings(trainer)

    def restore(self, checkpoint_dir: Path) -> None:
        saved = load_checkpoint(checkpoint_dir)
        changed = [
            f"trainer.{key}={now} (the checkpoint was taken with {saved['settings'][key]})"
            for key, now in self.settings.items()
            if key in saved.get("settings", {}) and saved["settings"][key] != now
        ]
        if changed:
            raise FmtoolError(
                f"{checkpoint_dir}: config.yaml says {', '.join(changed)}; put the saved value back to resume"
            )
        try:
            self.model.load_state_dict(saved["model"])
        except RuntimeError as error:  # a model setting edited in config.yaml: name the first weight, not hundreds
            raise FmtoolError(
                f"{checkpoint_dir}: the checkpoint's weights do not fit the model config.yaml describes "
                f"({one_line(error).split(':', 1)[-1].strip()[:200]}); was config.yaml's model section edited?"
            ) from None
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        self.state = TrainState(**saved["state"])
        self.best_weights = saved["best_weights"]
        self.position = LoopPosition(**saved["position"])
        restore_rng_states(saved["rng"])
        log.info(
            "resumed at update %d (epoch %d, batch %d)",
            self.state.step,
            self.position.epoch,
            self.position.batches_done,
        )

    def save(self, checkpoint_dir: Path) -> None:
        if self.dist.is_main:
            save_checkpoint(
                checkpoint_dir,
                {
                    "model": unwrap(self.model).state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "scaler": self.scaler.state_dict(),
                    "state": asdict(self.state),
                    "best_weights": self.best_weights,
                    "rng": rng_states(),
                    "position": asdict(self.position),
                    "settings": self.settings,
                },
            )
        self.dist.barrier()

    def accumulate(
        self,
        pieces: list[dict[str, torch.Tensor]],
        counted: list[bool],
        ends_update: bool,
        method,
        adversarial: AdversarialConfig,
        grad_accum_steps: int,
    ) -> float:
        """Forward and backward over one global batch's micro-batches (this rank's share); returns its mean loss.

        Each piece's loss is weighted by its share of the batch's loss units over all ranks, so the gradient is the
        one-batch gradient however the batch is split. A piece not counted (a rank left without examples by a batch
        smaller than the world, or padding for FSDP's equal piece counts) still joins every collective, with weight 0.
        """
        if self.sharded:
            pieces, counted = equal_pieces(self.dist, pieces, counted)
        units = [self.loss_units(piece["labels"]) * is_counted for piece, is_counted in zip(pieces, counted)]
        my_units = sum(units)
        batch_units = self.dist.all_sum(my_units.clone()).clamp_min(1)
        batch_loss = 0.0
        for number, (piece, piece_units) in enumerate(zip(pieces, units)):
            weight = piece_units / batch_units * self.dist.world_size / grad_accum_steps
            step = _MicroStep(
                self.forward,
                piece,
                weight,
                runtime=self.runtime,
                scaler=self.scaler,
                dist=self.dist,
                last_of_update=ends_update and number == len(pieces) - 1,
                replicated=self.replicated,
            )
            batch_loss += method(step, adversarial).item() * (piece_units / my_units.clamp_min(1)).item()
        return batch_loss

    def update(self, max_grad_norm: Optional[float]) -> Optional[torch.Tensor]:
        """Clip, step the optimizer and scheduler, clear the gradients; returns the gradient norm before clipping."""
        grad_norm = clipped_step(self.optimizer, self.scaler, max_grad_norm)
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.state.step += 1
        return grad_norm

    def record_evaluation(self, metrics: dict[str, Any], cfg: TrainerConfig, *, final: bool) -> dict[str, Any]:
        """Note the evaluation in the state; keep a copy of the weights when they are the best so far (after the
        last evaluation the model in memory is the best: a copy would only cost memory)."""
        record, improved = record_evaluation(self.state, metrics, cfg)
        if improved:
            self.best_weights = None if final else weights_copy(self.model)
        self.position.evaluated_at = self.state.step
        return record


class _MicroStep:
    """adversarial.MicroStep over one rank's part of one micro-batch."""

    def __init__(
        self,
        model,
        batch: dict[str, torch.Tensor],
        weight: torch.Tensor,
        *,
        runtime: Runtime,
        scaler,
        dist: Distributed,
        last_of_update: bool,
        replicated: torch.nn.Module,
    ) -> None:
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


def stop_if_signalled(step: int, kept: str) -> None:
    """Raise TrainingStopped when SIGINT/SIGTERM arrived; `kept` tells the user what survives."""
    signum = signals.requested()
    if signum is not None:
        raise TrainingStopped(
            f"interrupted by {signals.name(signum)} after update {step}: {kept}", exit_code=128 + signum
        )


def record_evaluation(state: TrainState, metrics: dict[str, Any], cfg: TrainerConfig) -> tuple[dict[str, Any], bool]:
    """Note an evaluation's headline figures in the state; returns its record and whether it is the best so far."""
    if cfg.metric not in metrics:
        raise FmtoolError(_UNKNOWN_METRIC.format(cfg.metric, ", ".join(headline(metrics))))
    improved = _improved(metrics[cfg.metric], state.best_metric, cfg.greater_is_better)
    if improved:
        state.best_metric, state.best_step, state.stale_evaluations = metrics[cfg.metric], state.step, 0
    else:
        state.stale_evaluations += 1
    record = {"step": state.step, "epoch": state.epoch, **headline(metrics)}
    state.evaluations.append(record)
    return record, improved


def train_record(state: TrainState, loss: float, **figures: float) -> dict[str, Any]:
    return {"split": "train", "step": state.step, "epoch": state.epoch, "loss": loss, **figures}


def weights_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in unwrap(model).state_dict().items()}


def timed_evaluation(
    evaluate: Callable[[torch.nn.Module], dict[str, Any]], model: torch.nn.Module
) -> tuple[dict[str, Any], float]:
    """The evaluation's metrics and its seconds (kept out of the training throughput); the model back in training
    mode."""
    started = time.perf_counter()
    metrics = evaluate(model)
    seconds = time.perf_counter() - started
    model.train()
    return metrics, seconds


def _check_finite(batch_loss: float, step: int, epoch: int, checkpoint: Optional[Path]) -> None:
    if not math.isfinite(batch_loss):
        kept = f"; the last checkpoint ({checkpoint}) is from before it" if checkpoint is not None else ""
        raise TrainingStopped(
            f"training stopped: the loss is {batch_loss} at update {step + 1} (epoch {epoch}); lower optimizer.lr "
            f"or check the data{kept}"
        )


def _with_last(batches: Iterator[list]) -> Iterator[tuple[list, bool]]:
    """Each batch with whether it is the epoch's last (streamed epochs have no length to check)."""
    previous = next(batches, None)
    for batch in batches:
        yield previous, False
        previous = batch
    if previous is not None:
        yield previous, True


# a training-loss curve needs points: a short run logs at least this many (longer ones every log_every_steps)
MIN_LOGGED_POINTS = 20


def logging_interval(log_every_steps: int, total_updates: int) -> int:
    """Updates between training-loss records: log_every_steps, or fewer so a run logs MIN_LOGGED_POINTS of them."""
    return max(1, min(log_every_steps, total_updates // MIN_LOGGED_POINTS))


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
    adversarial: Optional[AdversarialConfig] = None,
    dist: Distributed = Distributed(),
    checkpoint_dir: Optional[Path] = None,
    resume: bool = False,
    on_log: Callable[[dict[str, Any]], None] = lambda record: None,
    progress: Progress = SilentProgress(),
    loss_units: Callable[[torch.Tensor], torch.Tensor] = labelled_positions,
) -> TrainState:
    """Train `model` in place on `batches`; on return it holds the best weights seen.

    collate(features, epoch) builds one micro-batch; loss_units(labels) counts the positions its loss averages over.
    With evaluate=None there is no validation: the final weights are kept. With resume, the state in checkpoint_dir
    is restored first and the epoch continues after the last checkpointed update.
    """
    model.to(runtime.device)
    total = total_updates(batches.batches_per_epoch, trainer)
    run = _Training(model, optimizer_cfg, scheduler_cfg, total, runtime, dist, trainer, loss_units)
    if resume:
        run.restore(checkpoint_dir)
    state, position = run.state, run.position
    checkpoints = checkpoint_dir if checkpoint_dir is not None and trainer.checkpoint_every_steps else None
    kept_on_stop = (
        "checkpoint saved; continue with fmtool resume"
        if checkpoints is not None
        else "nothing to resume without trainer.checkpoint_every_steps"
    )
    adversarial = adversarial or AdversarialConfig()
    method = METHODS.get(adversarial.name.value)
    log_every = logging_interval(trainer.log_every_steps, total)
    max_batch_tokens = batch_token_budget(trainer, runtime.device)

    def evaluate_now() -> bool:
        """Evaluate and log; True when trainer.patience evaluations in a row brought no improvement."""
        metrics, seconds = timed_evaluation(evaluate, run.model)
        position.evaluation_seconds += seconds
        record = run.record_evaluation(metrics, trainer, final=state.step >= total)
        on_log({"split": "validation", **record})
        log.info(
            "eval step=<%d> %s=<%.4f> best=<%.4f>",
            state.step,
            trainer.metric,
            record[trainer.metric],
            state.best_metric,
        )
        return trainer.patience is not None and state.stale_evaluations >= trainer.patience

    progress.start("train", total)
    progress.advance(state.step)
    # throughput counts training only: evaluations are timed apart, and a resumed run adds its earlier time
    started = time.perf_counter() - state.train_seconds - position.evaluation_seconds
    run.model.train()
    run.optimizer.zero_grad(set_to_none=True)
    stop = False
    epoch, skip = position.epoch, position.batches_done
    while not stop and state.step < total and (trainer.max_steps or epoch < trainer.epochs):
        state.epoch = epoch
        index = -1
        for index, (global_batch, last_in_epoch) in enumerate(_with_last(batches.epoch(epoch))):
            if index < skip:
                continue
            mine = dist.shard(global_batch)
            pieces = [
                {k: v.to(runtime.device, non_blocking=True) for k, v in collate(piece, epoch).items()}
                for piece in token_budget_pieces(mine or global_batch[:1], max_batch_tokens)
            ]
            ends_update = (index + 1) % trainer.grad_accum_steps == 0 or last_in_epoch
            batch_loss = run.accumulate(
                pieces, [bool(mine)] * len(pieces), ends_update, method, adversarial, trainer.grad_accum_steps
            )
            _check_finite(batch_loss, state.step, epoch, checkpoints)
            position.epoch, position.batches_done = epoch, index + 1
            position.running_loss += batch_loss
            position.running_batches += 1
            state.train_samples += len(global_batch)
            if not ends_update:
                continue
            grad_norm = run.update(trainer.max_grad_norm)
            mean_loss = position.running_loss / position.running_batches
            if state.step % log_every == 0 or state.step == total:
                grad = {} if grad_norm is None else {"grad_norm": grad_norm.item()}
                on_log(train_record(state, mean_loss, lr=run.scheduler.get_last_lr()[0], **grad))
                position.running_loss, position.running_batches = 0.0, 0
            if evaluate is not None and trainer.eval_every_steps and state.step % trainer.eval_every_steps == 0:
                stop = evaluate_now()
            if checkpoints is not None and state.step % trainer.checkpoint_every_steps == 0:
                state.train_seconds = time.perf_counter() - started - position.evaluation_seconds
                run.save(checkpoints)
            progress.advance(1, loss=mean_loss)
            if signals.requested() is not None and checkpoints is not None:
                run.save(checkpoints)
            stop_if_signalled(state.step, kept_on_stop)
            if stop or state.step >= total:
                break
        if index < 0:
            raise FmtoolError("the training data gave no batches: is the training file empty?")
        if (
            evaluate is not None
            and not stop
            and position.evaluated_at != state.step
            and (not trainer.eval_every_steps or state.step >= total)
        ):
            stop = evaluate_now()
        epoch, skip = epoch + 1, 0
    state.stopped_early = stop
    state.train_seconds = time.perf_counter() - started - position.evaluation_seconds
    progress.stop()
    if run.best_weights is not None:
        run.model.load_state_dict(run.best_weights)
    if run.sharded:
        model.load_state_dict(full_state_dict(run.model))
        model.to(runtime.device)
    return state
