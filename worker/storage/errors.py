"""The storage package's exception root."""


class StorageError(Exception):
    """Root of every error a store raises."""


class TransientStorageError(StorageError):
    """Throttling, 5xx, a dropped connection: safe to retry."""


class ObjectMissing(StorageError):
    """The object does not exist (or has been deleted)."""


class RegionNotAllowed(StorageError):
    """The bucket lives outside the allowed regions."""


class InvalidKey(StorageError):
    """An object key outside the allowed shape."""
