"""Private-file helpers shared by the local keyring and the file subject-key store.

Files are created mode 0600 inside a directory created mode 0700, replaced atomically
(write a temp file beside the target, fsync, rename, fsync the directory), and read-modify-write
cycles are serialized across processes with ``flock`` on a sibling ``.lock`` file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_write_private", "ensure_private_dir", "file_lock", "read_private"]

_PRIVATE_FILE_MODE = 0o600
_PRIVATE_DIR_MODE = 0o700


def ensure_private_dir(directory: Path) -> None:
    """Create ``directory`` (and parents) if missing; a directory we create gets mode 0700."""
    if directory.is_dir():
        return
    directory.mkdir(mode=_PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    os.chmod(directory, _PRIVATE_DIR_MODE)


def atomic_write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically; the file has mode 0600."""
    ensure_private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, _PRIVATE_FILE_MODE)
    try:
        try:
            os.fchmod(fd, _PRIVATE_FILE_MODE)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(dfd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(dfd)


class InsecureFileError(Exception):
    """The file is readable or writable by group or others."""


def read_private(path: Path) -> tuple[bytes, tuple[int, int, int, int]] | None:
    """Read ``path`` if it exists; return its bytes and an identity (see :func:`file_identity_of`).

    Raises :class:`InsecureFileError` if group or others have any access to it.
    """
    flags = os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InsecureFileError(f"{path} is not a regular file")
        if st.st_mode & 0o077:
            raise InsecureFileError(
                f"{path} has mode {stat.S_IMODE(st.st_mode):04o}; it must be 0600"
            )
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks), file_identity_of(st)


def file_identity_of(st: os.stat_result) -> tuple[int, int, int, int]:
    """The (inode, mtime_ns, ctime_ns, size) tuple used to notice that a file was replaced."""
    return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


def file_identity(path: Path) -> tuple[int, int, int, int] | None:
    """The identity of ``path`` now, or ``None`` if it does not exist."""
    try:
        return file_identity_of(os.stat(path))
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``<path>.lock`` (created 0600) for the ``with`` block."""
    ensure_private_dir(path.parent)
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, _PRIVATE_FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
