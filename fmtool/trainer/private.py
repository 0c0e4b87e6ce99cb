"""DP-SGD fine-tuning through Opacus: each example's gradient clipped to trainer.dp.max_grad_norm, Gaussian
noise added to their sum, batches drawn by Poisson sampling, and the privacy spent tracked by an accountant.

Abadi et al. 2016, "Deep Learning with Differential Privacy"; Yousefpour et al. 2021, "Opacus". A loop of its
own, epoch by epoch, because the guarantee holds only for exactly this procedure: no gradient accumulation,
token-budget splitting, adversarial steps or the CPU training changes of the default loop, and full precision
(the per-example gradients are what the noise is calibrated to). The loss is each example's mean over its
labelled tokens, averaged over the batch, so every example weighs the same whatever its length. The epoch
structure around the updates (training and evaluation records, the best weights by trainer.metric, stopping on a
signal) is the default loop's: keeping the best epoch's weights is post-processing, since the accountant already
counts every update as released.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional, Sequence

import torch

from fmtool.config.schema import OptimizerConfig, OptimizerName, SchedulerConfig, TrainerConfig
from fmtool.dataset.examples import IGNORE_INDEX
from fmtool.errors import FmtoolError
from fmtool.inference import Runtime
from fmtool.optimizer import build_optimizer, parameter_groups
from fmtool.scheduler import build_scheduler
from fmtool.trainer import signals
from fmtool.trainer.loop import (
    Progress,
    SilentProgress,
    TrainState,
    record_evaluation,
    stop_if_signalled,
    timed_evaluation,
    train_record,
    weights_copy,
)

log = logging.getLogger(__name__)


def per_example_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of each example's mean cross-entropy over its labelled positions."""
    if logits.dim() == 2:
        return torch.nn.functional.cross_entropy(logits.float(), labels)
    token = torch.nn.functional.cross_entropy(
        logits.float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none"
    )
    counts = labels.ne(IGNORE_INDEX).sum(1).clamp_min(1)
    return (token.sum(1) / counts).mean()


def _per_example_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Position and segment ids given per row: left to the model, they are one shared row, and the per-example
    gradients of their embeddings would have a batch of one."""
    rows, width = batch["input_ids"].shape
    batch.setdefault("token_type_ids", torch.zeros_like(batch["input_ids"]))
    batch.setdefault("position_ids", torch.arange(width, device=batch["input_ids"].device).expand(rows, width))
    return batch


def _no_example_drawn(optimizer) -> None:
    """Poisson sampling can draw no example. The step must still happen, noise alone, and count for the
    accountant: skipping it would release an exactly unchanged model, which DP-SGD's analysis never does."""
    for parameter in optimizer.params:
        parameter.grad_sample = torch.zeros((0, *parameter.shape), device=parameter.device, dtype=parameter.dtype)


def _epsilon(engine, dp) -> float:
    """The epsilon spent so far; an accountant that cannot bound it (the PRV accountant asks for petabytes when the
    noise is tiny) stops the run with the setting to change."""
    try:
        return engine.get_epsilon(dp.delta)
    except (MemoryError, ValueError, OverflowError) as error:
        raise FmtoolError(
            f"trainer.dp: the {dp.accountant.value} accountant cannot bound epsilon for noise_multiplier "
            f"{engine.accountant.history[-1][0] if engine.accountant.history else '?'} ({type(error).__name__}); "
            "add noise, or use trainer.dp.accountant=rdp"
        ) from None


def fit_private(
    model: torch.nn.Module,
    features: Sequence[Any],
    *,
    collate: Callable[[Sequence[Any]], dict[str, torch.Tensor]],
    trainer: TrainerConfig,
    optimizer_cfg: OptimizerConfig,
    scheduler_cfg: SchedulerConfig,
    runtime: Runtime,
    seed: int,
    evaluate: Optional[Callable[[torch.nn.Module], dict[str, Any]]],
    on_log: Callable[[dict[str, Any]], None] = lambda record: None,
    progress: Progress = SilentProgress(),
) -> TrainState:
    """Train `model` in place with DP-SGD for trainer.epochs; the returned state's `privacy` holds the epsilon spent."""
    from opacus import PrivacyEngine
    from opacus.utils.uniform_sampler import UniformWithReplacementSampler

    dp = trainer.dp
    model.to(runtime.device).train()
    generator = torch.Generator().manual_seed(seed)
    sample_rate = min(1.0, trainer.batch_size / len(features))
    loader = torch.utils.data.DataLoader(
        features,
        collate_fn=lambda drawn: collate(drawn) if drawn else {"labels": torch.empty(0, dtype=torch.long)},
        generator=generator,
        batch_sampler=UniformWithReplacementSampler(
            num_samples=len(features), sample_rate=sample_rate, generator=generator
        ),
    )
    # the configured optimizer: plain SGD is what DP-SGD's analyses assume, and its steps stay as small as the noise
    # while Adam scales every noisy coordinate up to a full step; AdamW unfused, as Opacus wraps its step
    if optimizer_cfg.name == OptimizerName.adamw:
        optimizer = torch.optim.AdamW(
            parameter_groups(model, optimizer_cfg.weight_decay),
            lr=optimizer_cfg.lr,
            betas=tuple(optimizer_cfg.betas),
            eps=optimizer_cfg.eps,
        )
    else:
        optimizer = build_optimizer(model, optimizer_cfg)
    engine = PrivacyEngine(accountant=dp.accountant.value)
    common = dict(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        max_grad_norm=dp.max_grad_norm,
        poisson_sampling=False,
        noise_generator=torch.Generator(device=runtime.device).manual_seed(seed + 1),
    )
    if dp.target_epsilon is not None:
        private, optimizer, loader = engine.make_private_with_epsilon(
            **common, target_epsilon=dp.target_epsilon, target_delta=dp.delta, epochs=trainer.epochs
        )
    else:
        private, optimizer, loader = engine.make_private(**common, noise_multiplier=dp.noise_multiplier)
    scheduler = build_scheduler(optimizer, scheduler_cfg, trainer.epochs * len(loader))
    state, best_weights = TrainState(), None
    progress.start("train (DP-SGD)", trainer.epochs * len(loader))
    started = time.perf_counter()
    evaluation_seconds = 0.0
    for epoch in range(trainer.epochs):
        state.epoch, losses = epoch, []
        for batch in loader:
            labels = batch.pop("labels")
            if len(labels):
                batch = _per_example_inputs({k: v.to(runtime.device) for k, v in batch.items()})
                loss = per_example_loss(private(**batch).logits, labels.to(runtime.device))
                loss.backward()
                losses.append(loss.item())
            else:
                _no_example_drawn(optimizer)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            state.step += 1
            state.train_samples += len(labels)
            progress.advance(1, loss=losses[-1] if losses else float("nan"))
            if signals.requested() is not None:
                private._close()
            stop_if_signalled(
                state.step, "a DP-SGD run keeps no checkpoint, so train it again (its epsilon accounts for a whole run)"
            )
        record = train_record(state, sum(losses) / max(len(losses), 1), epsilon=_epsilon(engine, dp))
        on_log(record)
        log.info("epoch=<%d> loss=<%.4f> epsilon=<%.3f> delta=<%g>", epoch, record["loss"], record["epsilon"], dp.delta)
        if evaluate is not None:
            metrics, seconds = timed_evaluation(evaluate, model)
            evaluation_seconds += seconds
            evaluation, improved = record_evaluation(state, metrics, trainer)
            on_log({"split": "validation", **evaluation})
            if improved:
                best_weights = None if epoch == trainer.epochs - 1 else weights_copy(model)
    progress.stop()
    state.train_seconds = time.perf_counter() - started - evaluation_seconds
    private._close()  # hooks and per-example gradients off: the model is a plain one again
    if best_weights is not None:
        model.load_state_dict(best_weights)
    state.privacy = {
        "epsilon": _epsilon(engine, dp),
        "delta": dp.delta,
        "noise_multiplier": optimizer.noise_multiplier,
        "max_grad_norm": dp.max_grad_norm,
        "sample_rate": sample_rate,
        "accountant": dp.accountant.value,
        "steps": state.step,
        "optimizer": optimizer_cfg.name.value,
    }
    return state
