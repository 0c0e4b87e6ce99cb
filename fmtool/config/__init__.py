"""Typed configuration: the schemas, their registration with Hydra, and whole-config validation."""

from fmtool.config.compose import compose_train_config, config_dir, to_typed
from fmtool.config.schema import TrainConfig

__all__ = ["TrainConfig", "compose_train_config", "config_dir", "to_typed"]
