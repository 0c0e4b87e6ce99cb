"""Learning-rate schedules: linear warm-up, then linear decay, cosine decay or a constant rate."""

from __future__ import annotations

import math

import torch
from transformers import get_scheduler

from fmtool.config.schema import SchedulerConfig, SchedulerName

_HF_NAMES = {
    SchedulerName.linear: "linear",
    SchedulerName.cosine: "cosine",
    SchedulerName.constant: "constant_with_warmup",
}


def warmup_steps(cfg: SchedulerConfig, total_steps: int) -> int:
    return cfg.warmup_steps or math.ceil(cfg.warmup_ratio * total_steps)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, total_steps: int):
    return get_scheduler(
        _HF_NAMES[cfg.name], optimizer, num_warmup_steps=warmup_steps(cfg, total_steps), num_training_steps=total_steps
    )
