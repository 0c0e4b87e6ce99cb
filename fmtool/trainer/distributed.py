"""Data-parallel training on PyTorch's own engine: torchrun (or accelerate launch) + DistributedDataParallel, or
torch's FSDP2 (`fully_shard`) with trainer.strategy=fsdp.

The launcher sets RANK / WORLD_SIZE / LOCAL_RANK; every rank runs the same config. Each global batch
of trainer.batch_size examples is split across ranks, and each rank's loss is weighted by its share
of the batch's loss units (labelled tokens, masked tokens or examples), so the averaged gradient is
the one-process gradient of the whole batch. Only rank 0 writes the run directory.

FSDP2 shards each transformer block as one unit and the root (embeddings, head) as another, as torchtune does, so a
rank holds 1/world of the parameters, gradients and optimizer state and gathers one block at a time. It trains a
sharded copy; the caller's model stays whole (on the CPU) and receives the gathered full state dict at the end, so
evaluation, merging LoRA and saving see a plain transformers model. The mesh is given explicitly, so the same code
runs with gloo on CPU. Every forward gathers parameters on all ranks, so every rank runs the same number of
micro-batches (equal_pieces).
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist

from fmtool.config.schema import Strategy
from fmtool.model.family import transformer_blocks


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

    def all_max(self, value: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            torch_dist.all_reduce(value, op=torch_dist.ReduceOp.MAX)
        return value

    def wrap(self, model: torch.nn.Module, device: torch.device, strategy: Strategy) -> torch.nn.Module:
        """The module to train: `model` itself (one process), under DDP, or a sharded copy (FSDP2)."""
        if not self.enabled:
            return model
        if strategy == Strategy.fsdp:
            return sharded_copy(model, device, self.world_size)
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def no_sync(self, model: torch.nn.Module, sync: bool):
        """Skip DDP's gradient all-reduce for a backward that is not the last of an update (FSDP2 reduce-scatters
        each backward's gradients into the shards, which then accumulate there)."""
        if self.enabled and not sync and hasattr(model, "no_sync"):
            return model.no_sync()
        return contextlib.nullcontext()


def sharded_copy(model: torch.nn.Module, device: torch.device, world_size: int) -> torch.nn.Module:
    """A copy of `model` sharded by FSDP2 over all ranks, one unit per transformer block and one for the rest; the
    original moves to the CPU until full_state_dict's weights come back into it."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    model.to("cpu")
    copied = copy.deepcopy(model)
    mesh = init_device_mesh(device.type, (world_size,))
    for block in transformer_blocks(copied):
        fully_shard(block, mesh=mesh)
    fully_shard(copied, mesh=mesh)  # moves the shards to the mesh's device
    return copied


def full_state_dict(sharded: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights gathered from the shards, on every rank (a collective: all ranks call it)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(sharded, options=StateDictOptions(full_state_dict=True))


def equal_pieces(dist: Distributed, pieces: list, counted: list[bool]) -> tuple[list, list[bool]]:
    """Pad this rank's micro-batches, uncounted, to the most any rank has (FSDP2's gathers need every rank)."""
    count = torch.tensor(len(pieces), device=pieces[0]["input_ids"].device)
    missing = int(dist.all_max(count)) - len(pieces)
    return pieces + [pieces[-1]] * missing, counted + [False] * missing


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
