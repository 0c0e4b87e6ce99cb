"""LayerNorm that hands bf16 to the next layer under CPU bf16 autocast, so the residual stream stays in bf16.

Autocast runs layer_norm in fp32 and returns fp32, so every linear layer after it casts its input back to
bf16 (Q, K and V each cast the same tensor) and the backward pass casts every gradient the other way:
a tenth of a MiniLM step on 2 cores. This LayerNorm still normalises in fp32 inside the kernel, with
fp32 weights, but writes bf16, as a model run wholly in bf16 would. Weights and optimizer stay fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class BF16OutputLayerNorm(torch.nn.LayerNorm):
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        device = inputs.device.type
        if (
            device != "cpu"
            or not torch.is_autocast_enabled(device)
            or torch.get_autocast_dtype(device) != torch.bfloat16
        ):
            return super().forward(inputs)
        with torch.autocast(device, enabled=False):
            return F.layer_norm(inputs.to(torch.bfloat16), self.normalized_shape, self.weight, self.bias, self.eps)


def use_torch_layer_norm(model: torch.nn.Module) -> None:
    """Undo use_bf16_layer_norm, so the trained model evaluates as it will when loaded from disk."""
    for module in model.modules():
        if type(module) is BF16OutputLayerNorm:
            module.__class__ = torch.nn.LayerNorm


def use_bf16_layer_norm(model: torch.nn.Module) -> int:
    """Turn the model's torch.nn.LayerNorm modules into BF16OutputLayerNorm in place; returns how many."""
    changed = 0
    for module in model.modules():
        if type(module) is torch.nn.LayerNorm:
            # same parameters, buffers and state-dict keys: only the forward differs
            module.__class__ = BF16OutputLayerNorm
            changed += 1
    return changed
