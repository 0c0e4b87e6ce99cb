"""Freeze strategies: nothing, the embeddings, the embeddings and the bottom k layers, or all but the head.

`auto` fixes the embeddings of a pretrained model when fine-tuning it. The word-embedding matrix is half
of MiniLM's parameters, yet a fine-tuning step touches a few hundred of its 30,522 rows: its dense
gradient, clipping and AdamW update were a fifth of a CPU training step. Fixed embeddings also keep the
words the fine-tuning data never shows where pre-training put them. A random-init model, or masked-LM
pre-training, needs its embeddings trained, so there `auto` freezes nothing.
"""

from __future__ import annotations

import torch

from fmtool.config.schema import Freeze, TrainConfig, TaskName
from fmtool.errors import FmtoolError

_NO_LAYERS = "trainer.freeze=bottom_k: the model has {0} layers, trainer.freeze_layers={1} must be between 1 and {0}"


def _encoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    for module in model.modules():
        layers = getattr(module, "layer", None) or getattr(module, "layers", None)
        if isinstance(layers, torch.nn.ModuleList):
            return list(layers)
    return []


def resolve_freeze(cfg: TrainConfig) -> Freeze:
    if cfg.trainer.freeze != Freeze.auto:
        return cfg.trainer.freeze
    pretrained = cfg.model.name is not None and not cfg.model.random_init
    return Freeze.embeddings if pretrained and cfg.task.name != TaskName.mlm else Freeze.none


def apply_freeze(model, strategy: Freeze, layers: int = 0) -> int:
    """Turn off gradients as `strategy` says; returns how many parameters still train."""
    base = model.base_model
    if strategy == Freeze.all_but_head:
        base.requires_grad_(False)
    elif strategy in (Freeze.embeddings, Freeze.bottom_k):
        model.get_input_embeddings().requires_grad_(False)
        embeddings = getattr(base, "embeddings", None)
        if embeddings is not None:
            embeddings.requires_grad_(False)
        if strategy == Freeze.bottom_k:
            encoder_layers = _encoder_layers(base)
            if not 1 <= layers <= len(encoder_layers):
                raise FmtoolError(_NO_LAYERS.format(len(encoder_layers), layers))
            for layer in encoder_layers[:layers]:
                layer.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
