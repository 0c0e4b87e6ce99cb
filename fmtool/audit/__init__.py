"""Audit families, found by name in AUDITS, and run_audits() that runs the configured ones."""

from __future__ import annotations

import importlib
import logging
import pkgutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fmtool.audit.base import AUDITS, AuditContext, AuditResult
from fmtool.config.schema import range_problems
from fmtool.errors import FmtoolError, one_line

__all__ = ["AUDITS", "AuditContext", "AuditResult", "family_configs", "run_audits"]

log = logging.getLogger(__name__)

# every module of this package is imported, so a new family registers itself by existing
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def family_configs(audit: dict[str, Any]) -> dict[str, Any]:
    """Each configured family's settings as its typed dataclass; unknown names and keys, and values outside their
    ranges (every one found), fail here."""
    typed, problems = {}, []
    for name, settings in audit.items():
        family = AUDITS.get(name)
        try:
            merged = OmegaConf.merge(OmegaConf.structured(family.config_type), settings or {})
            typed[name] = OmegaConf.to_object(merged)
        except OmegaConfBaseException as error:
            raise FmtoolError(f"config: audit.{name}: {one_line(error)}") from None
        problems += range_problems(typed[name], f"audit.{name}.")
    if problems:
        raise FmtoolError("config: " + "; ".join(problems))
    return typed


def settings_problems(ctx: AuditContext, configs: dict[str, Any]) -> list[str]:
    """What stops a selected family on this model, found before any family runs: a data file that is not there,
    splits the model has none of, and each family's own checks (AuditFamily.check: labels, probes)."""
    problems = []
    for name, cfg in configs.items():
        family, key = AUDITS.get(name), f"audit.{name}"
        if not family.audits(ctx.task):
            continue
        data = getattr(cfg, "data", None)
        if data is not None and not Path(data).is_file():
            problems.append(f"{key}.data: {data} not found")
        splits = getattr(cfg, "splits", None)
        missing = [s for s in splits or [] if s not in ctx.available_splits] if data is None else []
        if missing:
            there = ", ".join(ctx.available_splits) or "none: a model directory's come from --split NAME=FILE"
            problems.append(f"{key}.splits: {', '.join(missing)} not available (splits: {there})")
        if family.check is not None and not problems:
            problems += family.check(ctx, cfg)
    return problems


def run_audits(ctx: AuditContext, audit: dict[str, Any]) -> list[tuple[AuditResult, dict[str, Any]]]:
    """(result, settings used) for every configured family, in config order; every family's settings are checked
    against the model first, so a problem in the last family does not surface after the others have run."""
    configs = family_configs(audit)
    problems = settings_problems(ctx, configs)
    if problems:
        raise FmtoolError("audit: " + "; ".join(problems))
    outcomes = []
    for name, cfg in configs.items():
        family = AUDITS.get(name)
        log.info("audit=<%s> started", name)
        started = time.perf_counter()
        if family.audits(ctx.task):
            result = family.run(ctx, cfg)
        else:
            result = AuditResult({}, [], warnings=[f"audits {family.kind}, not a {ctx.task.name} model"])
        result = replace(result, name=name, version=family.version, seconds=round(time.perf_counter() - started, 2))
        log.info(
            "audit=<%s> status=<%s> checks=<%d> seconds=<%.1f>", name, result.status, len(result.checks), result.seconds
        )
        outcomes.append((result, asdict(cfg)))
    return outcomes
