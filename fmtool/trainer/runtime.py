"""Device and precision from trainer.device / trainer.precision ('auto' picks what the machine does best)."""

from __future__ import annotations

import os
from typing import Optional

import torch

from fmtool.config.schema import Precision, TrainerConfig
from fmtool.errors import FmtoolError
from fmtool.inference import Runtime

_DTYPES = {Precision.bf16: torch.bfloat16, Precision.fp16: torch.float16}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        # under torchrun each rank owns the GPU of its LOCAL_RANK
        return (
            torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            if torch.cuda.is_available()
            else torch.device("cpu")
        )
    try:
        device = torch.device(name)
    except RuntimeError:
        raise FmtoolError(f"trainer.device='{name}' is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FmtoolError(f"trainer.device='{name}' but no CUDA device is available; use trainer.device=cpu or auto")
    return device


def resolve_precision(precision: Precision, device: torch.device) -> Precision:
    if precision != Precision.auto:
        if precision == Precision.fp16 and device.type == "cpu":
            raise FmtoolError("trainer.precision=fp16 needs a GPU; use bf16 or fp32 on CPU")
        return precision
    if device.type == "cuda":
        return Precision.bf16 if torch.cuda.is_bf16_supported() else Precision.fp16
    return Precision.bf16 if cpu_has_fast_bf16() else Precision.fp32


def cpu_has_fast_bf16() -> bool:
    """AMX: its tile units run bf16 matmuls faster than fp32 ones. AVX512-BF16 alone (a CPU without AMX, or a VM that
    hides it) is not enough: there bf16 autocast measured slower than fp32 in training and inference alike."""
    return getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()


# On CPU the few batches of long sentences, not the typical one, set peak memory; 2048 tokens splits only
# those (CoNLL-2003 averages 20 tokens a sentence) at no measurable cost in speed. A GPU wants its batches whole.
CPU_BATCH_TOKENS = 2048


def batch_token_budget(cfg: TrainerConfig, device: torch.device) -> Optional[int]:
    if cfg.max_batch_tokens is not None:
        return cfg.max_batch_tokens
    return CPU_BATCH_TOKENS if device.type == "cpu" else None


def resolve_runtime(cfg: TrainerConfig) -> Runtime:
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    return Runtime(device=device, autocast_dtype=_DTYPES.get(precision), batch_size=cfg.eval_batch_size)
