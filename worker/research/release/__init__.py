"""Research dataset releases: k-anonymous, per-release pseudonyms, encrypted WebDataset shards,
signed index, grants to researchers' X25519 keys, signed revocation lists; and the researcher's
pull and verify. Nothing is done at import, and nothing of the service side is imported until
one of its names is used (so ``pull`` and ``verify`` stay light).

Modules: :mod:`.service` (the façade), :mod:`.context` (shared dependencies and types),
:mod:`.plan`, :mod:`.shards`, :mod:`.finish`, :mod:`.publish`, :mod:`.grants`,
:mod:`.revocations`, :mod:`.reads`; :mod:`.format` (stored layout, shared with :mod:`.pull`),
:mod:`.keys`, :mod:`.kanon`, :mod:`.artifacts`, :mod:`.errors`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from worker.lazy import lazy_attributes

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


#: Import the service side's public names on first use.
__getattr__ = lazy_attributes(__name__, _LAZY)
