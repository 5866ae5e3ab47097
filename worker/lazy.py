"""Lazy public names for a package (PEP 562): the package lists each name with the submodule
that defines it, and the submodule is imported on the name's first use, then the value is kept
in the package's namespace. ``worker.crypto`` and ``worker.research.release`` use it so that a
short command imports only the part it touches."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package``: ``homes`` maps each public name to the
    submodule (relative to ``package``) that defines it; any other name is an AttributeError."""

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{home}"), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
