"""LoRA through peft: low-rank adapters on the attention projections, the task head trained in full.

peft chooses the adapted modules per family unless trainer.lora.target_modules names them (fmtool/model/family.py
checks either against the model before anything trains), and its task types (token and sequence classification,
causal LM) keep the head trainable and saved with the adapter whatever the family calls it (classifier, score).
The run saves the adapter in adapter/ and the merged model in model/, which plain transformers and pipeline() load.
"""

from __future__ import annotations

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model

from fmtool.config.schema import LoraSettings
from fmtool.errors import FmtoolError
from fmtool.model.family import lora_problems


def with_lora(model, settings: LoraSettings, task_type: str) -> PeftModel:
    """`model` with LoRA adapters (peft's TaskType `task_type`); only the adapters and the task head train."""
    problems = lora_problems(model, settings.target_modules, settings.r)
    if problems:
        raise FmtoolError(f"config: {problems[0]}")
    config = LoraConfig(
        task_type=TaskType[task_type],
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules) if settings.target_modules else None,
    )
    return get_peft_model(model, config)


def merged(model: torch.nn.Module) -> torch.nn.Module:
    """The plain transformers model with the adapters folded into its weights (the model itself without LoRA)."""
    return model.merge_and_unload() if isinstance(model, PeftModel) else model


def is_adapted(model: torch.nn.Module) -> bool:
    return isinstance(model, PeftModel)
