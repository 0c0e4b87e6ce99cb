"""Batched, length-sorted forward passes under inference_mode, with optional autocast.

Logits are reduced on the device (softmax, argmax) before anything is copied to the host, so memory
stays flat on large evaluation sets.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from fmtool.dataset.batching import Feature, collate, inference_batches


@dataclass(frozen=True)
class Runtime:
    """Where and how the model runs: device and autocast dtype (None = full precision)."""

    device: torch.device
    autocast_dtype: Optional[torch.dtype] = None
    batch_size: int = 128

    def autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)


Reducer = Callable[[torch.Tensor, dict[str, torch.Tensor]], list]


def run_model(
    model,
    features: Sequence[Feature],
    runtime: Runtime,
    pad_id: int,
    reduce: Reducer,
    on_batch: Callable[[int], None] = lambda n: None,
) -> list:
    """reduce(logits, batch) -> one host-side result per row; results come back in `features` order.

    The batch that reduce sees holds the features' gold labels under "labels" when they have them; the model never does.
    """
    model.eval()
    results: list = [None] * len(features)
    batches = inference_batches([len(f.input_ids) for f in features], runtime.batch_size)
    with torch.inference_mode(), runtime.autocast():
        for indices in batches:
            batch = {
                k: v.to(runtime.device, non_blocking=True)
                for k, v in collate([features[i] for i in indices], pad_id).items()
            }
            labels = batch.pop("labels", None)
            logits = model(**batch).logits.float()
            for index, row in zip(indices, reduce(logits, batch if labels is None else {**batch, "labels": labels})):
                results[index] = row
            on_batch(len(indices))
    return results
