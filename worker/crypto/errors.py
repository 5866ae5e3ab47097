"""Exception hierarchy of :mod:`worker.crypto`.

Every error raised on purpose by this package derives from :class:`CryptoError`. Messages never
carry key material, plaintext or the caller's encryption context values.
"""

from __future__ import annotations

__all__ = [
    "ContextError",
    "CryptoError",
    "DecryptError",
    "KeyNotFoundError",
    "KeyShreddedError",
    "KeyStoreError",
    "KeyringError",
]


class CryptoError(Exception):
    """Root of every error raised by :mod:`worker.crypto`."""


class DecryptError(CryptoError):
    """A ciphertext failed authentication or is malformed, truncated or reordered.

    Also raised for a wrong encryption context and for a wrong subject key: the format does not
    say which of these happened, on purpose.
    """


class KeyShreddedError(DecryptError):
    """The subject key was destroyed (the subject was erased); the data is unrecoverable."""


class KeyNotFoundError(DecryptError):
    """No subject key with this id exists (it was never created in this store)."""


class KeyringError(CryptoError):
    """The KEK is unavailable: KMS failure, unknown or retired KEK version, unreadable key file."""


class KeyStoreError(CryptoError):
    """The subject-key store cannot complete the operation (duplicate id, unreadable file)."""


class ContextError(CryptoError, ValueError):
    """The encryption context is not a mapping of non-empty-key strings to strings."""
