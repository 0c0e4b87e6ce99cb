"""What every training recipe does around the loop: seeding, device placement, freezing, figures."""

from __future__ import annotations

import logging
import random
from typing import Any, Optional, Sequence

import numpy as np
import torch

from fmtool.config.schema import Batching, PeftMethod, TrainConfig
from fmtool.dataset.batching import InMemoryBatches, collate
from fmtool.errors import FmtoolError
from fmtool.inference import Runtime
from fmtool.trainer.dropout import use_sfc64_dropout
from fmtool.trainer.embedding import merge_seen_rows, train_seen_rows_only
from fmtool.trainer.freeze import apply_freeze
from fmtool.trainer.layer_norm import use_bf16_layer_norm, use_torch_layer_norm
from fmtool.trainer.loop import SilentProgress, TrainState, fit
from fmtool.trainer.runtime import resolve_runtime

log = logging.getLogger(__name__)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare_model(model: torch.nn.Module, cfg: TrainConfig) -> tuple[Runtime, int]:
    """Freeze, enable gradient checkpointing, pick dropout and LayerNorm, move to the device: (runtime, trainable
    parameters)."""
    trainable = apply_freeze(model, cfg.trainer.freeze, cfg.trainer.freeze_layers)
    if cfg.trainer.gradient_checkpointing:
        # non-reentrant checkpointing is the variant that works with DDP and frozen inputs
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    runtime = resolve_runtime(cfg.trainer)
    # DP-SGD's per-example gradient hooks know torch's own modules only
    cpu_eager = runtime.device.type == "cpu" and not cfg.trainer.compile and not cfg.trainer.dp.enabled
    if cfg.trainer.fast_cpu_dropout and cpu_eager:
        use_sfc64_dropout(model)
    if cfg.trainer.bf16_residual and cpu_eager and runtime.autocast_dtype == torch.bfloat16:
        use_bf16_layer_norm(model)
    model.to(runtime.device)
    log.info(
        "device=<%s> autocast=<%s> freeze=<%s> trainable_parameters=<%d>",
        runtime.device,
        runtime.autocast_dtype,
        cfg.trainer.freeze.value,
        trainable,
    )
    return runtime, trainable


def finish_training(model: torch.nn.Module) -> None:
    """Undo the training-only module changes, so the final evaluation sees what loading the saved model gives.

    Dropout is inactive in evaluation and the attention function hands gradient-free calls to torch's fused
    kernel with sdpa's mask, so those two need nothing here.
    """
    merge_seen_rows(model)
    use_torch_layer_norm(model)


def training_figures(state: TrainState, cfg: TrainConfig, trainable: int, world_size: int) -> dict[str, Any]:
    """What results.json records of the training; a run that made no update is refused: its model is the
    initialisation, and audits would certify that as trained."""
    if state.step == 0:
        raise FmtoolError(
            f"training made no update (trainer.epochs={cfg.trainer.epochs}, "
            f"trainer.max_steps={cfg.trainer.max_steps}): "
            "the model is still its initialisation"
        )
    return {
        "updates": state.step,
        "epochs_started": state.epoch + 1,
        "samples": state.train_samples,
        "seconds": round(state.train_seconds, 2),
        "samples_per_second": round(state.train_samples / max(state.train_seconds, 1e-9), 2),
        "best_step": state.best_step,
        "best_metric": {cfg.trainer.metric: state.best_metric},
        "stopped_early": state.stopped_early,
        "trainable_parameters": trainable,
        "adversarial": cfg.adversarial.name.value,
        "processes": world_size,
        **({"privacy": state.privacy} if state.privacy else {}),
    }


def fit_features(model, tokenizer, runtime: Runtime, features: Sequence, cfg: TrainConfig, *, evaluate, **loop: Any):
    """Train `model` on encoded training features as cfg says (fit's other options in `loop`), then undo the
    training-only module changes so the model is what saving and loading it gives."""
    if cfg.trainer.dp.enabled:
        from fmtool.trainer.private import fit_private

        return fit_private(
            model,
            features,
            collate=lambda batch: collate(batch, tokenizer.pad_token_id),
            trainer=cfg.trainer,
            optimizer_cfg=cfg.optimizer,
            scheduler_cfg=cfg.scheduler,
            runtime=runtime,
            seed=cfg.seed,
            evaluate=evaluate,
            on_log=loop.get("on_log", lambda record: None),
            progress=loop.get("progress", SilentProgress()),
        )
    if cfg.trainer.skip_unseen_embedding_rows:
        train_seen_rows_only(model, {tokenizer.pad_token_id, *(i for f in features for i in f.input_ids)})
    state = fit(
        model,
        InMemoryBatches(
            features, cfg.trainer.batch_size, seed=cfg.seed, grouped=cfg.trainer.batching == Batching.length_grouped
        ),
        collate=lambda batch, epoch: collate(batch, tokenizer.pad_token_id),
        trainer=cfg.trainer,
        optimizer_cfg=cfg.optimizer,
        scheduler_cfg=cfg.scheduler,
        adversarial=cfg.adversarial,
        runtime=runtime,
        evaluate=evaluate,
        **loop,
    )
    finish_training(model)
    return state


def with_adapters(model: torch.nn.Module, cfg: TrainConfig, peft_task_type: Optional[str]) -> torch.nn.Module:
    """The model as trainer.peft says: itself, or wrapped in LoRA adapters (peft's `peft_task_type`, the task's)."""
    if cfg.trainer.peft != PeftMethod.lora:
        return model
    from fmtool.trainer.lora import with_lora

    return with_lora(model, cfg.trainer.lora, peft_task_type)
