"""Dropout whose masks come from numpy's SFC64 generator, for training on CPU.

torch draws CPU dropout masks element by element from one Mersenne twister: on a 2-core machine that
was a fifth of a MiniLM fine-tuning step. SFC64 fills the same mask several times faster. Each call
seeds its generator from torch's, so torch.manual_seed, checkpoints (which save torch's RNG state),
activation recomputation and data parallelism behave as with torch's dropout. Masks are Bernoulli
with the module's p to 1/65536; the kept values are scaled by 1/(1-p), as torch does.

Attention-probability dropout happens inside the attention function, not in a module, so it gets a
registered transformers attention implementation of its own (SFC64_ATTENTION).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

SFC64_ATTENTION = "fmtool_sfc64"

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


def _keep(count: int, p: float) -> np.ndarray:
    """`count` booleans, each True with probability 1 - p, from an SFC64 generator seeded from torch's."""
    seed = int(torch.randint(0, 2**62, (1,)))
    # the generator's raw 64-bit words are four uniform 16-bit levels each: half the time of Generator.integers
    levels = np.random.SFC64(seed).random_raw(-(-count // 4)).view(np.uint16)[:count]
    return levels >= round(p * _LEVELS)


_SAME_SIZE_INT = {2: (torch.int16, np.int16), 4: (torch.int32, np.int32), 8: (torch.int64, np.int64)}


def scaled_keep_mask(shape: torch.Size, p: float, dtype: torch.dtype) -> torch.Tensor:
    """A dropout mask of `shape` and `dtype`: 0 with probability p, else 1/(1-p) rounded to dtype; one numpy pass.

    numpy has no bfloat16, so the mask is written as the bit patterns of 0 and of the scale and viewed as
    `dtype`: half the time of converting a boolean mask and scaling it in torch.
    """
    bits = _keep(int(np.prod(shape)), p).view(np.uint8) * _scale_bits(p, dtype)
    return torch.from_numpy(bits).view(dtype).view(shape)


@functools.lru_cache(maxsize=None)
def _scale_bits(p: float, dtype: torch.dtype) -> np.integer:
    """1/(1-p) in `dtype`, as the numpy integer of the same size holding its bits (one per model's p and dtype)."""
    scale = torch.tensor(1.0 / (1.0 - p), dtype=dtype)
    torch_int, numpy_int = _SAME_SIZE_INT[scale.element_size()]
    return numpy_int(scale.view(torch_int).item())


def sfc64_dropout(inputs: torch.Tensor, p: float) -> torch.Tensor:
    return _ApplyMask.apply(inputs, scaled_keep_mask(inputs.shape, p, inputs.dtype))


class SFC64Dropout(torch.nn.Dropout):
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or inputs.device.type != "cpu":
            return super().forward(inputs)
        return sfc64_dropout(inputs, self.p)


def sfc64_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
):
    """Scaled dot-product attention with SFC64 dropout on the probabilities; (B, L, heads, dim) out, as
    transformers expects.

    Training uses the matmul-softmax-matmul composite: on CPU, torch's fused kernel falls back to it anyway
    once dropout is on, and its own backward in bf16 is slower than the composite's. Without gradients the
    fused kernel is the faster one (2.0 vs 5.5 ms for 32 x 12 heads x 48 tokens), so inference goes there.
    """
    if not torch.is_grad_enabled() or query.device.type != "cpu" or _needs_stock_attention(module, kwargs):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    scores = torch.matmul(query, key.transpose(2, 3)) * (query.size(-1) ** -0.5 if scaling is None else scaling)
    if attention_mask is not None:
        scores = (
            scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
            if attention_mask.dtype == torch.bool
            else scores + attention_mask
        )
    probabilities = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    if dropout > 0.0:
        probabilities = sfc64_dropout(probabilities, dropout)
    return torch.matmul(probabilities, value).transpose(1, 2).contiguous(), None


def _needs_stock_attention(module: torch.nn.Module, kwargs: dict) -> bool:
    """Features the composite above does not implement (causal masking, position biases, grouped key/value heads,
    soft-capping, sliding windows, attention sinks): those calls go to transformers' own sdpa function unchanged."""
    if kwargs.get("is_causal") or getattr(module, "num_key_value_groups", 1) > 1:
        return True
    return any(kwargs.get(name) is not None for name in ("position_bias", "softcap", "sliding_window", "s_aux"))


AttentionInterface.register(SFC64_ATTENTION, sfc64_attention)
# sdpa's boolean mask: without gradients the fused kernel then sees exactly what a stock sdpa model gives it
AttentionMaskInterface.register(SFC64_ATTENTION, sdpa_mask)


# architectures whose self-attention is BERT's (tests/test_dropout.py checks the swapped attention against sdpa on each)
ATTENTION_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "electra", "camembert")


def use_sfc64_dropout(model: torch.nn.Module) -> int:
    """Replace the model's torch.nn.Dropout modules in place, and its attention where transformers lets it be
    swapped (sdpa or eager) on an architecture in ATTENTION_MODEL_TYPES; returns how many dropout modules were
    replaced. Other architectures keep their attention, and its dropout, as they are."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Dropout:
                setattr(parent, name, SFC64Dropout(child.p, child.inplace).train(child.training))
                replaced += 1
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) in ATTENTION_MODEL_TYPES and getattr(
        config, "_attn_implementation", None
    ) in ("sdpa", "eager"):
        model.set_attn_implementation(SFC64_ATTENTION)
    return replaced
