"""Tasks: how examples become features, how predictions are made and scored, by task name."""

from fmtool.task import classification, clm, mlm, ner  # noqa: F401  (registration)
from fmtool.task.base import TASKS, Task

__all__ = ["TASKS", "Task"]
