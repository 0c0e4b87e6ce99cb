"""What every audit family shares: the context it reads, the result it returns, checks and the registry.

A family is one module in fmtool/audit/ that defines a config dataclass (its knobs and thresholds) and
`run(ctx, cfg) -> AuditResult`, and registers both under its name; its defaults live in
configs/audit/<name>.yaml. Nothing else has to change to add one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from fmtool.dataset.examples import Example
from fmtool.registry import Registry

PASS, FAIL, SKIP = "pass", "fail", "skip"


@dataclass(frozen=True)
class Check:
    """One thresholded figure: passes when value <= max (or >= min); skipped when it could not be measured."""

    name: str
    value: Optional[float]
    threshold: float
    direction: str  # "max" or "min"
    status: str
    description: str = ""


def check(name: str, value: Optional[float], *, max_value: Optional[float] = None, min_value: Optional[float] = None, description: str = "") -> Check:
    threshold, direction = (max_value, "max") if max_value is not None else (min_value, "min")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return Check(name, None, threshold, direction, SKIP, description)
    ok = value <= threshold if direction == "max" else value >= threshold
    return Check(name, float(value), threshold, direction, PASS if ok else FAIL, description)


@dataclass(frozen=True)
class AuditResult:
    name: str
    version: int
    summary: dict[str, float]
    checks: list[Check]
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        statuses = {c.status for c in self.checks}
        return FAIL if FAIL in statuses else PASS if PASS in statuses else SKIP

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN (a figure that could not be measured) becomes null."""
        return _finite({**asdict(self), "status": self.status})


def _finite(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


@dataclass
class AuditContext:
    """What an audit may read: the model behind a predict function, its labels, and the run's data."""

    task: str
    labels: list[str]
    predict: Callable[[Sequence[Example]], list]
    load_split: Callable[[str], list[Example]]
    available_splits: list[str]
    seed: int = 0
    model_dir: Optional[Path] = None


@dataclass(frozen=True)
class AuditFamily:
    name: str
    version: int
    config_type: type
    run: Callable[[AuditContext, Any], AuditResult]
    description: str
    tasks: tuple[str, ...]


AUDITS: Registry[AuditFamily] = Registry("audit")


def register(name: str, *, version: int, config_type: type, description: str, tasks: tuple[str, ...] = ("ner", "classification")) -> Callable:
    """Decorator for a family's run(ctx, cfg) function; `tasks` are the model kinds it can audit."""

    def add(run: Callable[[AuditContext, Any], AuditResult]) -> Callable:
        AUDITS.register(name)(AuditFamily(name=name, version=version, config_type=config_type, run=run, description=description, tasks=tasks))
        return run

    return add
