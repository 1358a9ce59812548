"""Named choices of the library (dataset formats, index kinds, clustering distances ...).

Each is a :class:`Registry`: the module that implements the choices registers them, and everything else —
the loaders, the command line's ``choices``, the error for an unknown name — reads the registry. A new
choice is one registration (plus its tests); an unknown name is an error that lists the known ones, never
a silent fallback.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from cpcl.errors import CpclError

T = TypeVar("T")


class UnknownChoiceError(CpclError, ValueError):
    """A name that no entry of a registry has."""


class Registry(Generic[T]):
    """An ordered mapping of names to entries, filled by :meth:`register`."""

    def __init__(self, kind: str):
        self.kind = kind  # what the entries are, for messages: "dataset format", "index kind" ...
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T | None = None):
        """``registry.register("name", entry)``, or ``@registry.register("name")`` on a function or class."""
        if entry is not None:
            self._add(name, entry)
            return entry

        def decorate(obj: T) -> T:
            self._add(name, obj)
            return obj

        return decorate

    def _add(self, name: str, entry: T) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownChoiceError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self.names())}") from None

    __getitem__ = get

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


