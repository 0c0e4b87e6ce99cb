"""Tasks: how examples become features, how predictions are made and scored, by task name."""

from fmtool.task.base import TASKS, Task
from fmtool.task import classification, mlm, ner  # noqa: F401  (registration)

__all__ = ["TASKS", "Task"]
