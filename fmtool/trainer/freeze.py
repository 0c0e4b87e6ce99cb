"""Freeze strategies: nothing, the embeddings, the embeddings and the bottom k layers, or all but the head."""

from __future__ import annotations

from fmtool.config.schema import Freeze
from fmtool.errors import FmtoolError
from fmtool.model.family import transformer_blocks

_NO_LAYERS = "trainer.freeze=bottom_k: the model has {0} layers, trainer.freeze_layers={1} must be between 1 and {0}"


def apply_freeze(model, strategy: Freeze, layers: int = 0) -> int:
    """Turn off gradients as `strategy` says; returns how many parameters still train. bottom_k freezes the
    embeddings and the k lowest transformer blocks, as model/family.py finds them for every family."""
    base = model.base_model
    if strategy == Freeze.all_but_head:
        base.requires_grad_(False)
    elif strategy in (Freeze.embeddings, Freeze.bottom_k):
        model.get_input_embeddings().requires_grad_(False)
        embeddings = getattr(base, "embeddings", None)
        if embeddings is not None:
            embeddings.requires_grad_(False)
        if strategy == Freeze.bottom_k:
            encoder_layers = transformer_blocks(base)
            if not 1 <= layers <= len(encoder_layers):
                raise FmtoolError(_NO_LAYERS.format(len(encoder_layers), layers))
            for layer in encoder_layers[:layers]:
                layer.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
