"""Research dataset releases: k-anonymous, per-release pseudonyms, encrypted WebDataset shards,
signed index, grants to researchers' X25519 keys, signed revocation lists; and the researcher's
pull and verify. Nothing is done at import, and nothing of the service side is imported until
one of its names is used (so ``pull`` and ``verify`` stay light).

Modules: :mod:`.service` (the façade), :mod:`.context` (shared dependencies and types),
:mod:`.plan`, :mod:`.shards`, :mod:`.finish`, :mod:`.publish`, :mod:`.grants`,
:mod:`.revocations`, :mod:`.reads`; :mod:`.format` (stored layout, shared with :mod:`.pull`),
:mod:`.keys`, :mod:`.kanon`, :mod:`.artifacts`, :mod:`.errors`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ReleaseError

if TYPE_CHECKING:
    from .context import ReleaseConfig, ReleaseRequest, ReleaseResult
    from .service import ReleaseService

__all__ = ["ReleaseConfig", "ReleaseError", "ReleaseRequest", "ReleaseResult", "ReleaseService"]

_LAZY = {
    "ReleaseConfig": "context",
    "ReleaseRequest": "context",
    "ReleaseResult": "context",
    "ReleaseService": "service",
}


def __getattr__(name: str) -> Any:
    """Import the service side's public names on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
