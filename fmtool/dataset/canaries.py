"""Canaries: secret random sequences planted in a pre-training corpus to measure how much the model memorises.

Carlini et al. 2019, "The Secret Sharer": a sentence such as "my secret number is 3 8 1 0 4 7" is inserted r
times into the training data; after training, the model's likelihood of the true secret is ranked among
other secrets of the same format. Each canary's secret is drawn from the run's seed, so the run directory needs
no copy of it beyond the training data itself, and the audit draws the same ones again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from fmtool.config.schema import CanaryConfig

# a seed offset of its own, so canaries do not repeat the data order or dropout draws of the same seed
_SEED_OFFSET = 104_729


@dataclass(frozen=True)
class Canary:
    secret: str  # digits separated by spaces: one word each
    repetitions: int
    text: str


def secret_text(rng: random.Random, digits: int) -> str:
    return " ".join(str(rng.randrange(10)) for _ in range(digits))


def make_canaries(cfg: CanaryConfig, seed: int) -> list[Canary]:
    """One canary per entry of cfg.repetitions, with distinct secrets."""
    rng = random.Random(seed + _SEED_OFFSET)
    canaries, used = [], set()
    for repetitions in cfg.repetitions:
        secret = secret_text(rng, cfg.digits)
        while secret in used:
            secret = secret_text(rng, cfg.digits)
        used.add(secret)
        canaries.append(Canary(secret, repetitions, cfg.template.format(secret=secret)))
    return canaries


def with_canaries(documents: Sequence[str], canaries: Sequence[Canary], seed: int) -> list[str]:
    """`documents` with every canary inserted `repetitions` times at seeded random places."""
    rng = random.Random(seed + _SEED_OFFSET + 1)
    out = list(documents)
    for canary in canaries:
        for _ in range(canary.repetitions):
            out.insert(rng.randrange(len(out) + 1), canary.text)
    return out
