"""Paired statistics between two audited models on the same probe items: the difference of a check's mean outcome,
its interval and p-value, and the verdicts built on them (`fmtool compare --gate`, `fmtool audit --attribute`).

Two models audited on the same probes are paired item by item (ItemOutcomes' stable ids), which removes the
variation between items from the comparison: lm-evaluation-harness #3831 shows an unpaired test at p = 0.080 where
the paired one gives 0.008 on the same 220 items.

- The difference is Δ = mean(candidate) − mean(reference) over the shared items (each arm averaged over its seed
  replicates first, when it has several).
- Its interval and p-value come from a paired bootstrap that resamples the shared items' groups (one input's
  rewrites, one template: items that are not independent, Miller 2024, resampled together) and, with several seed
  replicates, the seeds too, paired across the arms: the MultiBERTs multi-bootstrap (Sellam et al. 2021). The
  p-value is twice the share of draws on the other side of 0, as that code computes it.
- For 0/1 outcomes of one model each, the p-value is exact McNemar's on the discordant pairs instead.
- Across the checks of one report, Holm's step-down correction (Holm 1979) adjusts the p-values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Optional, Sequence

import numpy as np

# fewer shared items than this leave the interval meaningless: no paired comparison is made
MIN_SHARED_ITEMS = 10
_DRAWS = 2000


@dataclass(frozen=True)
class PairedDifference:
    """A check's mean outcome on the shared items for the reference and the candidate, their difference with its
    interval, the p-value (raw, and Holm-adjusted across the report's checks) and how it was computed."""

    check: str
    reference: float
    candidate: float
    difference: float
    interval: tuple[float, float]
    p_value: float
    n: int
    seeds: int
    test: str
    adjusted_p: Optional[float] = None

    def significant(self, alpha: float) -> bool:
        """Holm-adjusted p (the raw one before adjustment) below alpha, and the interval clear of 0."""
        low, high = self.interval
        p_value = self.adjusted_p if self.adjusted_p is not None else self.p_value
        return p_value < alpha and not low <= 0 <= high

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "reference": self.reference,
            "candidate": self.candidate,
            "difference": self.difference,
            "interval": list(self.interval),
            "p_value": self.p_value,
            "adjusted_p": self.adjusted_p,
            "items": self.n,
            "seeds": self.seeds,
            "test": self.test,
        }


def _matrix(arm: Sequence[dict[str, list]], ids: Sequence[str]) -> np.ndarray:
    """[seeds x items] outcomes of one arm on `ids`."""
    rows = []
    for replicate in arm:
        by_id = dict(zip(replicate["ids"], replicate["values"]))
        rows.append([by_id[i] for i in ids])
    return np.asarray(rows, dtype=float)


def shared_ids(arms: Sequence[Sequence[dict[str, list]]]) -> list[str]:
    """The item ids every replicate of every arm has, in the first replicate's order."""
    common = set(arms[0][0]["ids"])
    for arm in arms:
        for replicate in arm:
            common &= set(replicate["ids"])
    return [i for i in arms[0][0]["ids"] if i in common]


def exact_mcnemar(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Two-sided exact McNemar p-value of paired 0/1 outcomes: a binomial test of the discordant pairs at 1/2."""
    worse = int(np.sum((reference == 1) & (candidate == 0)))
    better = int(np.sum((reference == 0) & (candidate == 1)))
    n = worse + better
    if n == 0:
        return 1.0
    k = min(worse, better)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_difference(
    check: str,
    reference: Sequence[dict[str, list]],
    candidate: Sequence[dict[str, list]],
    *,
    seed: int = 0,
    confidence: float = 0.95,
) -> Optional[PairedDifference]:
    """Δ = candidate − reference on the items both arms share (each arm: its seed replicates' item outcomes, as
    ItemOutcomes.to_dict() saves them); None with fewer than MIN_SHARED_ITEMS shared items."""
    ids = shared_ids([reference, candidate])
    if len(ids) < MIN_SHARED_ITEMS:
        return None
    ref, cand = _matrix(reference, ids), _matrix(candidate, ids)
    groups_of = dict(zip(reference[0]["ids"], reference[0].get("groups") or reference[0]["ids"]))
    labels = [groups_of.get(i, i) for i in ids]
    clusters = [np.flatnonzero(np.asarray(labels) == g) for g in dict.fromkeys(labels)]
    rng = np.random.default_rng(seed)
    seeds = min(len(ref), len(cand))
    draws = np.empty(_DRAWS)
    for d in range(_DRAWS):
        picked = np.concatenate([clusters[c] for c in rng.integers(0, len(clusters), len(clusters))])
        # paired seeds: replicate k of one arm goes with replicate k of the other, as MultiBERTs pairs them
        rows = rng.integers(0, seeds, seeds) if seeds > 1 else np.zeros(1, dtype=int)
        draws[d] = cand[rows][:, picked].mean() - ref[rows][:, picked].mean()
    difference = float(cand.mean() - ref.mean())
    tail = (1 - confidence) / 2
    interval = (float(np.quantile(draws, tail)), float(np.quantile(draws, 1 - tail)))
    binary = len(ref) == len(cand) == 1 and set(np.unique(ref)) <= {0, 1} and set(np.unique(cand)) <= {0, 1}
    if binary:
        p_value, test = exact_mcnemar(ref[0], cand[0]), "exact McNemar"
    else:
        # the share of draws on the other side of 0, both ways (a difference of exactly 0 counts half)
        below, at = float(np.mean(draws < 0)), float(np.mean(draws == 0))
        p_value = min(1.0, 2 * min(below + at / 2, 1 - below - at / 2))
        test = "paired multi-bootstrap" if seeds > 1 else "paired bootstrap"
    return PairedDifference(
        check, float(ref.mean()), float(cand.mean()), difference, interval, p_value, len(ids), seeds, test
    )


def paired_differences(
    arms: dict[str, tuple[Sequence[dict[str, list]], Sequence[dict[str, list]]]], *, seed: int = 0
) -> dict[str, PairedDifference]:
    """Check -> its paired difference (reference arm, candidate arm), Holm-adjusted across the checks measured;
    checks with too few shared items are left out."""
    found = {
        name: paired_difference(name, reference, candidate, seed=seed) for name, (reference, candidate) in arms.items()
    }
    found = {name: difference for name, difference in found.items() if difference is not None}
    adjusted = holm([d.p_value for d in found.values()])
    return {name: replace(d, adjusted_p=p) for (name, d), p in zip(found.items(), adjusted)}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def harmful(difference: float, direction: str) -> bool:
    """Whether a change of `difference` in a check's value is for the worse: up for a maximum, down for a minimum."""
    return difference > 0 if direction == "max" else difference < 0


# where a check's finding comes from, comparing the fine-tuned model (F) with what the foundation model brings (P)
INHERITED, INTRODUCED, AMPLIFIED, MITIGATED, INDETERMINATE, NO_FINDING = (
    "inherited",
    "introduced",
    "amplified",
    "mitigated",
    "indeterminate",
    "none",
)
VERDICT_RULES = {
    INHERITED: "P already fails the check and Δ's interval lies within ±margin of 0",
    INTRODUCED: "P passes, F fails, and Δ is significant the harmful way (Holm-adjusted p < alpha, clear of 0)",
    AMPLIFIED: "P and F both fail, and Δ is significant the harmful way",
    MITIGATED: "Δ is significant the good way",
    NO_FINDING: "neither P nor F fails, and Δ is not significant the good way",
    INDETERMINATE: "anything else: the items cannot tell",
}


def fails(value: float, threshold: float, direction: str) -> bool:
    """A mean outcome beyond the check's threshold (its point value: arms of several seeds have no one interval)."""
    return value > threshold if direction == "max" else value < threshold


def verdict(found: PairedDifference, threshold: float, direction: str, margin: float, alpha: float = 0.05) -> str:
    """VERDICT_RULES applied to Δ = F − P of one check (found.reference is P, found.candidate F)."""
    low, high = found.interval
    significant = found.significant(alpha)
    reference_fails, candidate_fails = (
        fails(found.reference, threshold, direction),
        fails(found.candidate, threshold, direction),
    )
    if significant and not harmful(found.difference, direction):
        return MITIGATED
    if significant and candidate_fails:
        return AMPLIFIED if reference_fails else INTRODUCED
    if reference_fails and -margin <= low and high <= margin:
        return INHERITED
    if not reference_fails and not candidate_fails:
        return NO_FINDING
    return INDETERMINATE
