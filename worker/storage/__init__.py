"""Object stores (local directory, S3-compatible) and the vault that encrypts for them."""

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
