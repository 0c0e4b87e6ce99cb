"""Training-data augmentation with the audits' own edits: find a weakness, train on it, re-test.

dataset.augment.perturbations names robustness perturbations (fmtool/dataset/noise.py: add_typo, lowercase,
swap_entities, ...) and counterfactual swaps (swap_gender, swap_first_name_gender, swap_first_name_origin,
swap_nationality, swap_religion; fmtool/dataset/counterfactual.py). For each, a seeded `share` of the training
examples is edited (NER tags realigned) and the copies that changed are added to the training split; the run
records how many each added.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Callable, Sequence

from fmtool.config.schema import AugmentConfig
from fmtool.dataset import noise
from fmtool.dataset.counterfactual import ATTRIBUTES, counterfactual_groups, counterfactuals
from fmtool.dataset.examples import Example, TokenExample
from fmtool.dataset.perturb import perturb

SWAPS = tuple(f"swap_{attribute}" for attribute in ATTRIBUTES)
CHOICES = (*noise.NAMES, *SWAPS)


def _editor(name: str, pool, seed: int) -> Callable[[Example], Example]:
    """The edit `name` makes to one example (the swap lexicon and the perturbation are built once)."""
    if name in SWAPS:
        attribute = name[len("swap_") :]
        swaps = counterfactual_groups([attribute], key="dataset.augment")[attribute]

        def swapped(example: Example) -> Example:
            variants = counterfactuals(example, swaps)
            return random.Random(f"{seed}:{name}:{example.id}").choice(variants) if variants else example

        return swapped
    edit = noise.perturbation(name, entity_pool=pool)
    return lambda example: perturb(example, edit, seed)


def augment(train: Sequence[Example], cfg: AugmentConfig, seed: int) -> tuple[list[Example], dict[str, int]]:
    """`train` followed by the changed copies of each perturbation's sample, and the number each added."""
    pool = noise.entity_pool([(e.tokens, e.tags) for e in train if isinstance(e, TokenExample)])
    added: list[Example] = []
    counts: dict[str, int] = {}
    for name in cfg.perturbations:
        rng = random.Random(f"{seed}:augment:{name}")
        sample = rng.sample(list(train), round(cfg.share * len(train)))
        edited = _editor(name, pool, seed)
        copies = [replace(e, id=f"{e.id}+{name}") for e in map(edited, sample)]
        changed = [c for c, e in zip(copies, sample) if _content(c) != _content(e)]
        counts[name] = len(changed)
        added += changed
    return [*train, *added], counts


def _content(example: Example):
    return (
        (tuple(example.tokens), tuple(example.tags))
        if isinstance(example, TokenExample)
        else (example.text, example.text_pair, example.label)
    )
