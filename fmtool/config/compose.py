"""Find the config tree, merge overrides, and turn composed configs into typed objects (composition itself, which
needs every plug-in's schema, is fmtool/configure.py)."""

from __future__ import annotations

import importlib.resources
import sys
from pathlib import Path
from typing import Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fmtool.config.schema import TrainConfig
from fmtool.errors import FmtoolError, one_line

_NO_CONFIG_DIR = "fmtool's configs/ directory was not found next to the package or under {0}"
_NO_TASK = "config: task.name is not set; choose a task with +task=ner, +task=classification or +task=mlm"
_PACKAGE_NOT_FOUND = "${{pkg_dir:{0},...}}: Python package '{0}' is not installed"


def config_dir() -> Path:
    """The configs/ tree: beside the package in a checkout, under <prefix>/share/fmtool once installed."""
    candidates = [
        Path(__file__).resolve().parents[2] / "configs",
        Path(sys.prefix) / "share" / "fmtool" / "configs",
    ]
    for candidate in candidates:
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FmtoolError(_NO_CONFIG_DIR.format(candidates[-1]))


def package_dir(package: str, subpath: str = "") -> str:
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError:
        raise FmtoolError(_PACKAGE_NOT_FOUND.format(package)) from None
    return str(Path(str(root)) / subpath)


def resolved(cfg: DictConfig, *, throw_on_missing: bool = False) -> dict:
    """`cfg` as plain dicts and lists with every interpolation resolved; a resolver's failure (a probe not
    installed, a package missing) is the config error it names, not a traceback."""
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=throw_on_missing)
    except OmegaConfBaseException as error:
        raise FmtoolError(f"config: {one_line(error)}") from None


def with_dotlist(base, overrides: Sequence[str], what: str, *, prefix: str = "") -> DictConfig:
    """`base` (a structured config, a dict or a DictConfig) with key=value overrides in Hydra's grammar (as
    `fmtool train` takes them: `key={a:b}`, `key=[x,y]`), `prefix` cut from each key; a bad key or value is one
    line naming it."""
    try:
        patch = OmegaConf.create()
        for override in OverridesParser.create().parse_overrides(list(overrides)):
            OmegaConf.update(patch, override.key_or_group[len(prefix) :], override.value(), force_add=True)
        return OmegaConf.merge(base, patch)
    except Exception as error:  # omegaconf's grammar and validation errors share no base besides Exception
        raise FmtoolError(f"{what}: cannot apply {list(overrides)}: {one_line(error)}") from None


def to_typed(cfg: DictConfig) -> TrainConfig:
    """Resolve every interpolation and return the TrainConfig object, failing on missing values."""
    if OmegaConf.is_missing(cfg.task, "name"):
        raise FmtoolError(_NO_TASK)
    plain = {key: value for key, value in resolved(cfg, throw_on_missing=True).items() if key != "hydra"}
    try:
        merged = OmegaConf.merge(OmegaConf.structured(TrainConfig), plain)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        raise FmtoolError(f"config: {one_line(error)}") from None
