"""Envelope encryption at rest: streaming, committing, per-subject keys, local or KMS KEKs.

Key hierarchy: a KEK from a :class:`Keyring` wraps one random key per data subject
(:class:`SubjectKeys`, persisted through a :class:`SubjectKeyStore`), which wraps one random data
key per object, carried in the object's header (:class:`Envelope`). Destroying a subject key
shreds every object of that subject; rotating the KEK re-wraps subject keys only.

This package does no I/O at import time and imports nothing from storage or the ledger.
"""

from typing import TYPE_CHECKING

from worker.lazy import lazy_attributes

if TYPE_CHECKING:
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
    from .keyring_kms import KmsKeyring
    from .keyring_local import LocalKeyring
    from .secret import SecretKey
    from .stream import EncryptingWriter
    from .subject_keys import SubjectKeys

# Each public name and the module it lives in: imported on first use (PEP 562), so a command
# that only unwraps a key (``facemedia audit verify``) does not load the streaming envelope,
# and ``KmsKeyring`` (botocore) loads only where a KMS keyring is built.
_HOME = {
    "canonical_context": "context",
    "Envelope": "envelope",
    "ContextError": "errors",
    "CryptoError": "errors",
    "DecryptError": "errors",
    "KeyNotFoundError": "errors",
    "KeyringError": "errors",
    "KeyShreddedError": "errors",
    "KeyStoreError": "errors",
    "DEFAULT_SEGMENT_SIZE": "format",
    "Header": "format",
    "FileSubjectKeyStore": "key_store",
    "InMemorySubjectKeyStore": "key_store",
    "SubjectKeyStore": "key_store",
    "WrappedSubjectKey": "key_store",
    "KekRef": "keyring",
    "Keyring": "keyring",
    "WrappedKey": "keyring",
    "KmsKeyring": "keyring_kms",
    "LocalKeyring": "keyring_local",
    "SecretKey": "secret",
    "EncryptingWriter": "stream",
    "SubjectKeys": "subject_keys",
}


__getattr__ = lazy_attributes(__name__, _HOME)

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
