"""Dropout whose masks come from numpy's SFC64 generator, for training on CPU.

torch draws CPU dropout masks element by element from one Mersenne twister: on a 2-core machine that
was a fifth of a MiniLM fine-tuning step. SFC64 fills the same mask several times faster. Each call
seeds its generator from torch's, so torch.manual_seed, checkpoints (which save torch's RNG state),
activation recomputation and data parallelism behave as with torch's dropout. Masks are Bernoulli
with the module's p to 1/65536; the kept values are scaled by 1/(1-p), as torch does.
"""

from __future__ import annotations

import numpy as np
import torch

_LEVELS = 1 << 16


class _ApplyMask(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inputs: torch.Tensor, scaled_keep: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(scaled_keep)
        return inputs * scaled_keep

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (scaled_keep,) = ctx.saved_tensors
        return grad * scaled_keep, None


def keep_mask(shape: torch.Size, p: float) -> torch.Tensor:
    """A boolean mask of `shape`, each element True with probability 1 - p."""
    seed = int(torch.randint(0, 2**62, (1,)))
    levels = np.random.Generator(np.random.SFC64(seed)).integers(0, _LEVELS, int(np.prod(shape)), dtype=np.uint16)
    # int16 comparison: torch has no ordering for uint16 on CPU
    return torch.from_numpy(levels.view(np.int16)).view(shape) >= round(p * _LEVELS) - _LEVELS // 2


class SFC64Dropout(torch.nn.Dropout):
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or inputs.device.type != "cpu":
            return super().forward(inputs)
        scaled_keep = keep_mask(inputs.shape, self.p).to(inputs.dtype).mul_(1.0 / (1.0 - self.p))
        return _ApplyMask.apply(inputs, scaled_keep)


def use_sfc64_dropout(model: torch.nn.Module) -> int:
    """Replace the model's torch.nn.Dropout modules in place; returns how many were replaced.

    Attention-probability dropout inside fused attention kernels is left to torch.
    """
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Dropout:
                setattr(parent, name, SFC64Dropout(child.p, child.inplace))
                replaced += 1
    return replaced
