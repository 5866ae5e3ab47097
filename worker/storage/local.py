"""A store on a local directory: the embedded default. Holds ciphertext only.

Still private: every directory the store creates (its root and the key prefixes) is mode 0700 and
every object file 0600, whatever the umask (:mod:`worker.private_files`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from worker.private_files import PRIVATE_FILE_MODE, private_dir
from worker.storage.base import (
    DeleteResult,
    ObjectStore,
    PutResult,
    StoreEntry,
    StoreInfo,
    check_key,
    listed,
)
from worker.storage.errors import ObjectMissing

_CHUNK = 1024 * 1024


class LocalStore(ObjectStore):
    """Objects as files under ``root``; writes go to a temp file then rename (atomic)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, body: BinaryIO) -> PutResult:
        """Write ``body`` to a temp file beside the target, fsync, then rename over it."""
        path = self._path(key)
        if not path.parent.is_dir():
            private_dir(path.parent)  # each missing component 0700, never through a symlink
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".put-")  # O_EXCL, 0600
        written = 0
        try:
            with os.fdopen(fd, "wb") as out:
                os.fchmod(out.fileno(), PRIVATE_FILE_MODE)
                buf = bytearray(_CHUNK)
                view = memoryview(buf)
                readinto = getattr(body, "readinto", None)
                while True:
                    if readinto is not None:
                        n = readinto(view)
                        chunk: Any = view[:n]
                    else:
                        chunk = body.read(_CHUNK)
                        n = len(chunk)
                    if not n:
                        break
                    out.write(chunk)
                    written += n
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return PutResult(written)

    def get(self, key: str) -> BinaryIO:
        """Open the object for reading."""
        try:
            return self._path(key).open("rb")
        except FileNotFoundError:
            raise ObjectMissing("object not found") from None

    def delete(self, key: str) -> DeleteResult:
        """Unlink the file (a directory store keeps one version)."""
        path = self._path(key)
        removed = 0
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed = 1
        return DeleteResult(key=key, versions_removed=removed, verified=not path.exists())

    def exists(self, key: str) -> bool:
        """True if the file is there."""
        return self._path(key).exists()

    def keys(self, prefix: str = "") -> Iterator[str]:
        """Walk the directory; temp files are skipped."""
        if not self.root.exists():
            return
        for path in sorted(self.root.rglob("*")):
            if path.is_file() and not path.name.startswith(".put-"):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix) and listed(key, prefix):
                    yield key

    def entries(self, prefix: str = "") -> Iterator[StoreEntry]:
        """Every file under ``prefix`` with its modification time."""
        for key in self.keys(prefix):
            with contextlib.suppress(FileNotFoundError):
                mtime = (self.root / key).stat().st_mtime
                yield StoreEntry(key, datetime.fromtimestamp(mtime, UTC))

    def info(self) -> StoreInfo:
        """A local directory has no region; the host's location is the operator's call."""
        return StoreInfo(kind="local", location=str(self.root), region=None, versioned=False)

    def wipe(self) -> None:
        """Remove the whole store directory (demo and tests)."""
        shutil.rmtree(self.root, ignore_errors=True)
