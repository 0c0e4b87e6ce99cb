"""The training loop and what it needs: devices and precision, freezing, progress reporting."""

from fmtool.trainer.loop import TrainState, fit
from fmtool.trainer.runtime import resolve_runtime

__all__ = ["TrainState", "fit", "resolve_runtime"]
