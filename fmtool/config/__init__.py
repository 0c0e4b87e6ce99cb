"""Typed configuration, the ground floor: the schemas with their defaults and ranges, and composed configs turned
into typed objects. It imports nothing of fmtool but errors; composition with the plug-ins' schemas and whole-config
validation live above the plug-ins, in fmtool/configure.py."""

from fmtool.config.compose import config_dir, to_typed
from fmtool.config.schema import TrainConfig

__all__ = ["TrainConfig", "config_dir", "to_typed"]
