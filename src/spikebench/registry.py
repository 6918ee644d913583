"""Typed registries: the extension points of spikebench (neurons, surrogates, rules, datasets, ...).

A registry maps a name to an object (usually a class or factory). Unknown names raise
:class:`UnknownNameError`, whose message lists the valid names and suggests the closest one.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class SpikebenchError(Exception):
    """Base class of all errors spikebench reports to a user as one line."""


class UnknownNameError(SpikebenchError, KeyError):
    """A name that is not in a registry."""

    def __str__(self) -> str:  # KeyError quotes its message; we want the plain line.
        return str(self.args[0])


class Registry(Generic[T]):
    """A named collection of extension objects of one kind.

    ``kind`` is the word used in messages ("rule", "dataset", ...). Entries carry a one-line
    description (by default the first line of the object's docstring), shown by ``spikebench ls``.

    ``provider``: the module that registers the built-in entries, imported by the first lookup. It lets
    a module of a lower layer look entries up by name while they are declared in a layer above it (the
    studies, whose declarations hold report sections: :mod:`spikebench.studies.catalog`).
    """

    def __init__(self, kind: str, provider: str | None = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._descriptions: dict[str, str] = {}
        self._provider = provider

    def _provide(self) -> None:
        if self._provider is not None:
            provider, self._provider = self._provider, None  # its own registrations must not recurse
            try:
                importlib.import_module(provider)
            except BaseException:
                self._provider = provider
                raise

    def register(self, name: str, description: str | None = None) -> Callable[[T], T]:
        """Decorator: ``@REG.register("name")`` adds the decorated object under ``name``."""

        def decorator(obj: T) -> T:
            self.add(name, obj, description)
            return obj

        return decorator

    def add(self, name: str, obj: T, description: str | None = None) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = obj
        doc = description or (getattr(obj, "__doc__", None) or "").strip().splitlines()
        self._descriptions[name] = doc if isinstance(doc, str) else (doc[0] if doc else "")

    def get(self, name: str) -> T:
        self._provide()
        if name not in self._items:
            raise UnknownNameError(self.unknown_message(name))
        return self._items[name]

    def unknown_message(self, name: str) -> str:
        valid = ", ".join(self.names())
        close = difflib.get_close_matches(name, self.names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown {self.kind} {name!r}{hint}; valid: {valid}"

    def names(self) -> list[str]:
        self._provide()
        return sorted(self._items)

    def describe(self, name: str) -> str:
        self.get(name)
        return self._descriptions[name]

    def __contains__(self, name: object) -> bool:
        self._provide()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._provide()
        return len(self._items)
