"""Data-parallel training on PyTorch's own engine: torchrun (or accelerate launch) + DistributedDataParallel.

The launcher sets RANK / WORLD_SIZE / LOCAL_RANK; every rank runs the same config. Each global batch
of trainer.batch_size examples is split across ranks, and each rank's loss is weighted by its share
of the batch's loss units (labelled tokens, masked tokens or examples), so the averaged gradient is
the one-process gradient of the whole batch. Only rank 0 writes the run directory.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: list) -> list:
        """This rank's part of a global batch."""
        return batch[self.rank :: self.world_size]

    def all_sum(self, value: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            torch_dist.all_reduce(value)
        return value

    def barrier(self) -> None:
        if self.enabled:
            torch_dist.barrier()

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def no_sync(self, model: torch.nn.Module, sync: bool):
        """Skip the gradient all-reduce for a backward that is not the last of an update."""
        if self.enabled and not sync:
            return model.no_sync()
        return contextlib.nullcontext()


def from_env() -> Distributed:
    return Distributed(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def init(dist: Distributed, device_name: str) -> None:
    """Join the process group: NCCL when each rank has a GPU, gloo on CPU."""
    if not dist.enabled or torch_dist.is_initialized():
        return
    use_cuda = torch.cuda.is_available() and device_name != "cpu"
    if use_cuda:
        torch.cuda.set_device(dist.local_rank)
    torch_dist.init_process_group("nccl" if use_cuda else "gloo", timeout=dt.timedelta(minutes=30))


def shared_timestamp(dist: Distributed) -> str:
    """Rank 0's clock, so every rank names the same run directory."""
    stamp = [dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")]
    if dist.enabled:
        torch_dist.broadcast_object_list(stamp, src=0)
    return stamp[0]
