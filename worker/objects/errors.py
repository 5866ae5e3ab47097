"""The objects layer's exceptions: what a caller of the vault, the records helper or the
deleter catches, instead of the crypto and storage packages' errors (which it translates)."""

from __future__ import annotations

__all__ = [
    "ObjectCorrupt",
    "ObjectMissing",
    "ObjectShredded",
    "ObjectTooBig",
    "ObjectUnavailable",
    "ObjectsError",
]


class ObjectsError(Exception):
    """Root of every error of the objects layer (also: a store failure that is none of the
    kinds below, e.g. a refused key shape)."""


class ObjectMissing(ObjectsError):
    """The object is not stored (never written, or deleted)."""


class ObjectShredded(ObjectsError):
    """The object's subject key was destroyed (crypto-shredded): it can never be opened."""


class ObjectCorrupt(ObjectsError):
    """The stored bytes do not open: tampered, truncated, moved to another key or context, or
    sealed under a key that cannot be found or unwrapped."""


class ObjectTooBig(ObjectsError):
    """The plaintext exceeds the size the caller allows."""


class ObjectUnavailable(ObjectsError):
    """A transient store fault (throttling, 5xx, a dropped connection): safe to retry."""
