"""Audit families, found by name in AUDITS, and run_audits() that runs the configured ones."""

from __future__ import annotations

import importlib
import logging
import pkgutil
import time
from dataclasses import asdict, replace
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fmtool.audit.base import AUDITS, AuditContext, AuditResult
from fmtool.errors import FmtoolError, one_line

__all__ = ["AUDITS", "AuditContext", "AuditResult", "family_configs", "run_audits"]

log = logging.getLogger(__name__)

# every module of this package is imported, so a new family registers itself by existing
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def family_configs(audit: dict[str, Any]) -> dict[str, Any]:
    """Each configured family's settings as its typed dataclass; unknown names and keys fail here."""
    typed = {}
    for name, settings in audit.items():
        family = AUDITS.get(name)
        try:
            merged = OmegaConf.merge(OmegaConf.structured(family.config_type), settings or {})
            typed[name] = OmegaConf.to_object(merged)
        except OmegaConfBaseException as error:
            raise FmtoolError(f"config: audit.{name}: {one_line(error)}") from None
    return typed


def run_audits(ctx: AuditContext, audit: dict[str, Any]) -> list[tuple[AuditResult, dict[str, Any]]]:
    """(result, settings used) for every configured family, in config order."""
    outcomes = []
    for name, cfg in family_configs(audit).items():
        family = AUDITS.get(name)
        log.info("audit=<%s> started", name)
        started = time.perf_counter()
        if ctx.task in family.tasks:
            result = family.run(ctx, cfg)
        else:
            result = AuditResult({}, [], warnings=[f"audits {', '.join(family.tasks)} models, not {ctx.task}"])
        result = replace(result, name=name, version=family.version, seconds=round(time.perf_counter() - started, 2))
        log.info(
            "audit=<%s> status=<%s> checks=<%d> seconds=<%.1f>", name, result.status, len(result.checks), result.seconds
        )
        outcomes.append((result, asdict(cfg)))
    return outcomes
