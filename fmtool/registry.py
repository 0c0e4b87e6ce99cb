"""Name -> object registries for fmtool's plugins (audits, readers, tasks, ...).

Plugins are chosen by short names in YAML, so renaming a module never breaks a saved run's config.
"""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from fmtool.errors import FmtoolError

T = TypeVar("T")

_UNKNOWN = "Unknown {kind} '{name}'.{hint} Available: {available}"
_DUPLICATE = "{kind} '{name}' is already registered"


class Registry(Generic[T]):
    """A named collection of plugins with 'did you mean' errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(_DUPLICATE.format(kind=self.kind, name=name))
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise FmtoolError(self.unknown_message(name))
        return self._entries[name]

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(str(name), self._entries, n=1)
        hint = f" Did you mean: {close[0]}?" if close else ""
        return _UNKNOWN.format(kind=self.kind, name=name, hint=hint, available=", ".join(self.names()))

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
