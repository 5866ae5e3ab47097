"""Private-file helpers shared by the local keyring and the file subject-key store.

Files are created mode 0600 inside a directory created mode 0700, replaced atomically
(write a temp file beside the target, fsync, rename, fsync the directory — implemented once in
:mod:`worker.private_files`, re-exported here), and read-modify-write
cycles are serialized across processes with ``flock`` on a sibling ``.lock`` file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path

# A leaf utility module (standard library only): the one implementation of private writes.
from worker.private_files import PRIVATE_FILE_MODE, atomic_write_private, private_dir

__all__ = ["atomic_write_private", "ensure_private_dir", "file_lock", "read_private"]

_PRIVATE_FILE_MODE = PRIVATE_FILE_MODE


def ensure_private_dir(directory: Path) -> None:
    """Create ``directory`` (and parents) if missing, each created one mode 0700.

    Delegates to :func:`worker.private_files.private_dir`: a symlink is refused, and so is a
    directory group or others can write to.
    """
    private_dir(directory)


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
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(lock_path, flags, _PRIVATE_FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
