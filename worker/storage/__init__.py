"""Object stores (local directory, S3-compatible): they only ever see ciphertext (the vault that
encrypts for them is :mod:`worker.objects.vault`)."""

from worker.storage.base import DeleteResult, ObjectStore, StoreInfo, check_key
from worker.storage.errors import (
    InvalidKey,
    ObjectMissing,
    RegionNotAllowed,
    StorageError,
    TransientStorageError,
)

__all__ = [
    "DeleteResult",
    "InvalidKey",
    "ObjectMissing",
    "ObjectStore",
    "RegionNotAllowed",
    "StorageError",
    "StoreInfo",
    "TransientStorageError",
    "check_key",
]
