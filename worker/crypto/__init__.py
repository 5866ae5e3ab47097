"""Envelope encryption at rest: streaming, committing, per-subject keys, local or KMS KEKs.

Key hierarchy: a KEK from a :class:`Keyring` wraps one random key per data subject
(:class:`SubjectKeys`, persisted through a :class:`SubjectKeyStore`), which wraps one random data
key per object, carried in the object's header (:class:`Envelope`). Destroying a subject key
shreds every object of that subject; rotating the KEK re-wraps subject keys only.

This package does no I/O at import time and imports nothing from storage or the ledger.
"""

from typing import TYPE_CHECKING, Any

from .context import canonical_context
from .envelope import Envelope
from .errors import (
    ContextError,
    CryptoError,
    DecryptError,
    KeyNotFoundError,
    KeyringError,
    KeyShreddedError,
    KeyStoreError,
)
from .format import DEFAULT_SEGMENT_SIZE, Header
from .key_store import (
    FileSubjectKeyStore,
    InMemorySubjectKeyStore,
    SubjectKeyStore,
    WrappedSubjectKey,
)
from .keyring import KekRef, Keyring, WrappedKey
from .keyring_local import LocalKeyring
from .secret import SecretKey
from .stream import EncryptingWriter
from .subject_keys import SubjectKeys

if TYPE_CHECKING:
    from .keyring_kms import KmsKeyring


def __getattr__(name: str) -> Any:
    """``KmsKeyring`` on first use: it loads botocore, which a local keyring never needs."""
    if name == "KmsKeyring":
        from .keyring_kms import KmsKeyring

        return KmsKeyring
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_SEGMENT_SIZE",
    "ContextError",
    "CryptoError",
    "DecryptError",
    "EncryptingWriter",
    "Envelope",
    "FileSubjectKeyStore",
    "Header",
    "InMemorySubjectKeyStore",
    "KekRef",
    "KeyNotFoundError",
    "KeyShreddedError",
    "KeyStoreError",
    "Keyring",
    "KeyringError",
    "KmsKeyring",
    "LocalKeyring",
    "SecretKey",
    "SubjectKeyStore",
    "SubjectKeys",
    "WrappedKey",
    "WrappedSubjectKey",
    "canonical_context",
]
