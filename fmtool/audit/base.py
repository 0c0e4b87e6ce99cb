"""What every audit family shares: the context it reads, the result it returns, checks and the registry.

A family is one module in fmtool/audit/ that defines a config dataclass (its knobs and thresholds) and
`run(ctx, cfg) -> AuditResult`, and registers both under its name; its defaults live in
configs/audit/<name>.yaml. Nothing else has to change to add one. What an audit reads, all from `ctx`:

    predictions = ctx.predict(examples)              # labels / tags with probabilities
    scored = ctx.score(examples)                     # per example: loss of the gold labels, probabilities
    ctx.model, ctx.tokenizer, ctx.runtime            # the loaded model (gradients, embeddings, attributions)
    # a fresh model trained like the run, on other data (None: unknown start)
    twin = ctx.finetune(examples, ["trainer.epochs=1"])
    twin_scored = ctx.score(examples, model=twin)

A figure measured on a sample is a rate or a mean with an interval: `rate_check` (Wilson interval for a
proportion) and `check(..., interval=...)` (e.g. a bootstrap interval) fail only when the whole interval lies
beyond the threshold, pass when it lies within, and are `inconclusive` when it straddles the threshold, with
the number of examples that would settle them.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from fmtool.dataset.examples import Example
from fmtool.registry import Registry
from fmtool.task.base import ExampleScore, Task

PASS, FAIL, SKIP, INCONCLUSIVE = "pass", "fail", "skip", "inconclusive"
# a check's status is one of these; the report's overall status too, worst first
STATUSES = (FAIL, INCONCLUSIVE, PASS, SKIP)
_Z = {0.9: 1.6449, 0.95: 1.96, 0.99: 2.5758}


@dataclass(frozen=True)
class ItemOutcomes:
    """The per-item outcomes whose mean is a check's value (a flip, a pass, a change), each under an id that is the
    same for the same probe input whatever model is audited, so two models audited on the same probes pair up
    (fmtool/audit/paired.py). Items that share a group (one input's several rewrites, one template) are resampled
    together; no groups: each item is its own."""

    ids: tuple[str, ...]
    values: tuple[float, ...]
    groups: tuple[str, ...] = ()

    @classmethod
    def of(cls, keyed: Sequence[tuple[str, float]]) -> "ItemOutcomes":
        return cls(distinct([k for k, _ in keyed]), tuple(float(v) for _, v in keyed))

    def to_dict(self) -> dict[str, list]:
        return {"ids": list(self.ids), "values": [round(v, 6) for v in self.values], "groups": list(self.groups)}


def distinct(ids: Sequence[str]) -> tuple[str, ...]:
    """The ids, a repeated one numbered by its occurrence (a probe file may hold the same sentence twice)."""
    seen: dict[str, int] = {}
    out = []
    for key in ids:
        seen[key] = seen.get(key, 0) + 1
        out.append(key if seen[key] == 1 else f"{key}#{seen[key]}")
    return tuple(out)


def item_id(*parts: str) -> str:
    """A short, stable id of a probe item from what defines it (family, test, the input's words)."""
    return hashlib.sha1("\x1f".join(parts).encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Check:
    """One thresholded figure: passes when value <= max (or >= min); skipped when it could not be measured.

    With an interval (measured on `n` examples) the interval, not the point value, decides; `needed` is the
    sample size at which the same rate would settle an inconclusive check (None: it never would, or unknown).
    """

    name: str
    value: Optional[float]
    threshold: float
    direction: str  # "max" or "min"
    status: str
    description: str = ""
    interval: Optional[tuple[float, float]] = None
    n: Optional[int] = None
    needed: Optional[int] = None
    # what the value is the mean of, item by item: saved apart (audit/<family>.items.json), never in the report
    items: Optional[ItemOutcomes] = field(default=None, repr=False, compare=False)


def _status(value: float, threshold: float, direction: str, interval: Optional[tuple[float, float]]) -> str:
    low, high = interval if interval is not None else (value, value)
    if direction == "max":
        return PASS if high <= threshold else FAIL if low > threshold else INCONCLUSIVE
    return PASS if low >= threshold else FAIL if high < threshold else INCONCLUSIVE


def check(
    name: str,
    value: Optional[float],
    *,
    max_value: Optional[float] = None,
    min_value: Optional[float] = None,
    description: str = "",
    interval: Optional[Sequence[float]] = None,
    n: Optional[int] = None,
    items: Optional[ItemOutcomes] = None,
) -> Check:
    """A check on a figure; with `interval` the status is pass / fail / inconclusive as the module docstring says;
    `items` are the outcomes it is the mean of, kept for paired comparisons."""
    threshold, direction = (max_value, "max") if max_value is not None else (min_value, "min")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return Check(name, None, threshold, direction, SKIP, description, n=n, items=items)
    bounds = (
        None if interval is None or any(math.isnan(b) for b in interval) else (float(interval[0]), float(interval[1]))
    )
    return Check(
        name,
        float(value),
        threshold,
        direction,
        _status(float(value), threshold, direction, bounds),
        description,
        bounds,
        n,
        items=items,
    )


def wilson_interval(events: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion events/n (Wilson 1927): sound at 0 and n events and for small n."""
    if n <= 0:
        return (float("nan"), float("nan"))
    z = _Z.get(round(confidence, 4)) or _z(confidence)
    p = events / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def _z(confidence: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2))


def examples_to_settle(
    rate: float, threshold: float, direction: str, confidence: float = 0.95, limit: int = 10_000_000
) -> Optional[int]:
    """The smallest sample size at which `rate` observed would give a Wilson interval clear of `threshold`."""
    if rate == threshold:
        return None
    n = 1
    while n <= limit:
        if _status(rate, threshold, direction, wilson_interval(round(rate * n), n, confidence)) != INCONCLUSIVE:
            break
        n *= 2
    if n > limit:
        return None
    low, high = n // 2, n
    while low + 1 < high:
        middle = (low + high) // 2
        settled = (
            _status(rate, threshold, direction, wilson_interval(round(rate * middle), middle, confidence))
            != INCONCLUSIVE
        )
        low, high = (low, middle) if settled else (middle, high)
    return high


def rate_check(
    name: str,
    events: int,
    n: int,
    *,
    max_value: Optional[float] = None,
    min_value: Optional[float] = None,
    description: str = "",
    confidence: float = 0.95,
    items: Optional[ItemOutcomes] = None,
) -> Check:
    """A check on the proportion events/n, judged by its Wilson interval; skipped when n is 0. `items`: each
    item's 0 or 1, whose mean is events/n."""
    if n <= 0:
        return check(name, None, max_value=max_value, min_value=min_value, description=description, n=0)
    result = check(
        name,
        events / n,
        max_value=max_value,
        min_value=min_value,
        description=description,
        interval=wilson_interval(events, n, confidence),
        n=n,
        items=items,
    )
    if result.status == INCONCLUSIVE:
        return replace(result, needed=examples_to_settle(events / n, result.threshold, result.direction, confidence))
    return result


def bootstrap_interval(
    values: Sequence[Any],
    statistic: Callable[[np.ndarray], float] = np.mean,
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of statistic(values) (Efron & Tibshirani 1993); rows of a 2-D array resample
    together."""
    data = np.asarray(values, dtype=float)
    if len(data) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    draws = np.array([statistic(data[rng.integers(0, len(data), len(data))]) for _ in range(n_boot)])
    draws = draws[
        ~np.isnan(draws)
    ]  # a resample where the statistic is undefined (e.g. one class only) counts for nothing
    if len(draws) == 0:
        return (float("nan"), float("nan"))
    tail = (1 - confidence) / 2
    return (float(np.quantile(draws, tail)), float(np.quantile(draws, 1 - tail)))


def mean_check(
    name: str,
    values: Sequence[float],
    *,
    max_value: Optional[float] = None,
    min_value: Optional[float] = None,
    description: str = "",
    confidence: float = 0.95,
    seed: int = 0,
    items: Optional[Sequence[str]] = None,
) -> Check:
    """A check on the mean of per-example values, judged by its bootstrap interval; skipped with no values.
    `items`: each value's item id, kept for paired comparisons."""
    if len(values) == 0:
        return check(name, None, max_value=max_value, min_value=min_value, description=description, n=0)
    if items is not None and len(items) != len(values):
        raise ValueError(f"{name}: {len(items)} item ids for {len(values)} values")
    return check(
        name,
        float(np.mean(values)),
        max_value=max_value,
        min_value=min_value,
        description=description,
        interval=bootstrap_interval(values, confidence=confidence, seed=seed),
        n=len(values),
        items=None if items is None else ItemOutcomes.of(list(zip(items, values))),
    )


def worst_status(statuses: Sequence[str]) -> str:
    """fail > inconclusive > pass > skip: the status of a set of checks (or of audits)."""
    present = set(statuses)
    return next((s for s in STATUSES if s in present), SKIP)


@dataclass(frozen=True)
class AuditResult:
    """What a family's run() returns; run_audits stamps the family's registered name and version on it, and the
    seconds it took."""

    summary: dict[str, float]
    checks: list[Check]
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    name: str = ""
    version: int = 0
    seconds: Optional[float] = None

    @property
    def status(self) -> str:
        return worst_status([c.status for c in self.checks])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN (a figure that could not be measured) becomes null. Item outcomes are left out (they go
        to their own file, item_outcomes()); each check says how many it kept."""
        plain = asdict(self)
        for entry, kept in zip(plain["checks"], self.checks):
            entry["items"] = None if kept.items is None else len(kept.items.ids)
        return _finite({**plain, "status": self.status})

    def item_outcomes(self) -> dict[str, dict[str, list]]:
        """Check name -> its per-item outcomes, for the checks that keep them."""
        return {c.name: c.items.to_dict() for c in self.checks if c.items is not None}


def _finite(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _needs_run(*args: Any, **kwargs: Any) -> Any:
    from fmtool.errors import FmtoolError

    raise FmtoolError("this audit needs a fine-tuned model and its training config (an fmtool run directory)")


@dataclass
class AuditContext:
    """What an audit may read, built once per audited model (see the module docstring for its use).

    predict(examples, model=None) and score(examples, model=None) run `model` (default: the audited one)
    on the runtime's device and precision; finetune(examples, overrides) trains a fresh model from the run's
    starting point with the run's config plus Hydra-style overrides, and returns it ready for predict/score
    (None where that starting point is unknown: a model directory audited without --base-model); starting_model()
    gives that starting point itself, untrained (None where unknown). open_run(path)
    loads another finished run under the audited command's loading policy, ready for predict (pii's person_model).
    load_documents(split) gives a language-model run's documents of that split ([] when it kept none).
    """

    task: Task
    labels: list[str]
    predict: Callable[..., list]
    load_split: Callable[[str], list[Example]]
    available_splits: list[str]
    seed: int = 0
    model_dir: Optional[Path] = None
    model: Any = None
    tokenizer: Any = None
    runtime: Any = None
    config: Any = None
    score: Callable[..., list[ExampleScore]] = _needs_run
    finetune: Optional[Callable[..., Any]] = None
    starting_model: Optional[Callable[[], Any]] = None
    open_run: Optional[Callable[[str], Any]] = None
    load_documents: Callable[[str], list[str]] = lambda split: []


def evaluation_inputs(ctx: AuditContext, *, data: Optional[str], splits: Sequence[str], key: str) -> list[Example]:
    """The examples an audit reads: a text file of inputs (one per line, classification) or the run's splits."""
    from fmtool.dataset.examples import TextExample
    from fmtool.dataset.readers import text_lines
    from fmtool.errors import FmtoolError

    if data is not None:
        if ctx.task.labels_each_word:
            raise FmtoolError(
                f"{key}.data is for models that label whole texts; a {ctx.task.name} run uses its saved splits "
                f"({key}.splits)"
            )
        path = Path(data)
        if not path.is_file():
            raise FmtoolError(f"{key}.data: {path} not found")
        lines = [line.strip() for _, line in text_lines(path) if line.strip()]
        return [TextExample(id=str(i), text=t, label=ctx.labels[0]) for i, t in enumerate(lines)]
    check_splits(ctx, splits, key)
    return [e for split in splits for e in ctx.load_split(split)]


def check_splits(ctx: AuditContext, splits: Sequence[str], key: str) -> None:
    """An error naming `key`.splits when a split it asks for is not there to read."""
    from fmtool.errors import FmtoolError

    missing = [s for s in splits if s not in ctx.available_splits]
    if missing:
        there = ", ".join(ctx.available_splits) or "none: a model directory's come from --split NAME=FILE"
        raise FmtoolError(f"{key}.splits: {', '.join(missing)} not available (splits: {there})")


@dataclass(frozen=True)
class AuditFamily:
    name: str
    version: int
    config_type: type
    run: Callable[[AuditContext, Any], AuditResult]
    description: str
    language_models: bool
    labelled_models: bool
    # the family's own checks of its settings against the audited model, run before any family runs
    check: Optional[Callable[[AuditContext, Any], list[str]]] = None

    def audits(self, task: Task) -> bool:
        return self.language_models if task.language_model else self.labelled_models

    @property
    def kind(self) -> str:
        """What it audits, in words."""
        kinds = ["language models"] * self.language_models + ["fine-tuned models with labels"] * self.labelled_models
        return " and ".join(kinds)


AUDITS: Registry[AuditFamily] = Registry("audit")


def register(
    name: str,
    *,
    version: int,
    config_type: type,
    description: str,
    language_models: bool = False,
    labelled_models: bool = True,
    check: Optional[Callable[[AuditContext, Any], list[str]]] = None,
) -> Callable:
    """Decorator for a family's run(ctx, cfg) function: it audits language models (language_models=True), models
    fine-tuned to label text (labelled_models=True, the default), or both, as each task says it trains
    (Task.language_model)."""

    def add(run: Callable[[AuditContext, Any], AuditResult]) -> Callable:
        AUDITS.register(name)(
            AuditFamily(
                name=name,
                version=version,
                config_type=config_type,
                run=run,
                description=description,
                language_models=language_models,
                labelled_models=labelled_models,
                check=check,
            )
        )
        return run

    return add
