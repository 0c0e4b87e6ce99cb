"""Training checkpoints for `fmtool resume`: everything needed to continue bit-for-bit on CPU.

RUN_DIR/checkpoint/state.pt holds the model, optimizer, scheduler and grad-scaler states, the loop's
counters and position in the epoch, the best weights so far and every RNG state. It is the checkpoint's one file,
written to a temporary file and renamed: a kill at any moment leaves either the previous checkpoint or the new one,
whole, and the update it was taken after is read from it, never from a second file that a kill could leave stale.
It is read with torch.load(weights_only=True): a checkpoint cannot run code.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmtool.errors import FmtoolError

CHECKPOINT_FILE = "state.pt"


def rng_states() -> dict[str, Any]:
    kind, keys, position, has_gauss, cached = np.random.get_state()
    states = {
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), int(position), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(directory: Path, payload: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / (CHECKPOINT_FILE + ".partial")
    torch.save(payload, partial)
    os.replace(partial, directory / CHECKPOINT_FILE)


def checkpoint_step(directory: Path) -> int:
    """The update the checkpoint in `directory` was taken after (its tensors memory-mapped, not read)."""
    return _read(load_checkpoint_path(directory), mmap=True)["state"]["step"]


def load_checkpoint_path(directory: Path) -> Path:
    path = directory / CHECKPOINT_FILE
    if not path.is_file():
        raise FmtoolError(
            f"{path}: no checkpoint to resume from; train with trainer.checkpoint_every_steps=N to write one"
        )
    return path


def load_checkpoint(directory: Path) -> dict[str, Any]:
    return _read(load_checkpoint_path(directory))


def _read(path: Path, mmap: bool = False) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:  # a truncated or foreign file: say which, never a traceback
        raise FmtoolError(f"{path}: not a readable fmtool checkpoint ({str(error).splitlines()[0]})") from None
