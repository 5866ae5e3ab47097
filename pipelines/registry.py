"""One registry type for everything looked up by name: job types, AR effects, de-id operators.

A :class:`Registry` maps names to entries (a class, or one instance). Entries register
themselves when their module is imported (``@registry.register`` on a class, or
``registry.register(instance)``); the registry imports its ``package`` on first look-up, so a
look-up never depends on import order and dispatch is one dictionary read. A second, different
entry under a taken name is refused (:class:`ValueError`); an unknown name raises the error the
registry was built with (``unknown``), so each caller keeps its own error code and message.

Every registered entry follows the same two steps, validate before operate: ``validate(params)``
turns a plain mapping into checked, normalised params (or raises
:class:`~pipelines.errors.BadParams`), and only those are handed to the entry's ``apply`` or
``run`` (cf. Presidio's operators: ``validate`` then ``operate``).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class Named(Protocol):
    """What a registry entry has: a ``name`` (a class attribute, or an instance's)."""

    @property
    def name(self) -> str:
        """The name the entry is registered and looked up under."""


T = TypeVar("T", bound=Named)


class Registry(Generic[T]):
    """Entries of one kind, by name, loaded from ``package`` on first look-up.

    ``kind`` names the entries in messages (``"effect"``); ``unknown(name, known)`` builds the
    exception raised for a name that is not registered (``known`` is the sorted names, joined).
    """

    def __init__(
        self,
        kind: str,
        package: str,
        unknown: Callable[[object, str], Exception],
    ) -> None:
        self.kind = kind
        self._package = package
        self._unknown = unknown
        self._entries: dict[str, T] = {}
        self._lock = threading.Lock()

    def register(self, entry: T) -> T:
        """Add ``entry`` under its ``name`` and return it (usable as a class decorator).
        Registering the same class again is a no-op; another entry of that name is refused."""
        name = entry.name
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} needs a non-empty name")
        with self._lock:
            known = self._entries.get(name)
            if known is not None and _identity(known) is not _identity(entry):
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = entry
        return entry

    def _load(self) -> None:
        importlib.import_module(self._package)

    def get(self, name: object) -> T:
        """The entry registered as ``name``; the registry's ``unknown`` error when there is none."""
        self._load()
        entry = self._entries.get(name) if isinstance(name, str) else None
        if entry is None:
            raise self._unknown(name, ", ".join(self.names()))
        return entry

    def names(self) -> tuple[str, ...]:
        """Every registered name, sorted."""
        self._load()
        return tuple(sorted(self._entries))

    def __contains__(self, name: object) -> bool:
        self._load()
        return isinstance(name, str) and name in self._entries


def _identity(entry: object) -> object:
    """The class an entry stands for: itself for a class, its type for an instance."""
    return entry if isinstance(entry, type) else type(entry)


__all__ = ["Named", "Registry"]
