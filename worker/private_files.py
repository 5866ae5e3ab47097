"""Private files and directories: the one place decrypted or sensitive bytes reach the disk.

Everything facemedia writes that a stranger must not read (decrypted results, exports, demo
output, pulled releases, key files, the ledger, the local store) goes through this module:

* :func:`private_dir` creates missing directories mode ``0700`` (every component it creates),
  never through a symlink, and refuses a final directory that group or others can write to.
* :func:`private_output` writes a file mode ``0600``: the bytes go to a temporary file created
  beside the target with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (a planted file or symlink at the
  temporary name makes the open fail instead of being followed), are ``fsync``-ed, and the
  temporary file is renamed onto the target. ``rename(2)`` replaces a directory *entry*: it never
  writes through a symlink, so a symlink planted at the target after our check is replaced, and
  its target is never touched. A target that already is a symlink (or anything but a regular
  file) is refused up front. **An existing regular file at the target is replaced** — that is the
  expected behaviour of ``--out`` — atomically: a reader sees the old file or the complete new
  one, never a partial one. On any exception the temporary file is removed and the target is
  left as it was.
* :func:`atomic_write_private` is the same for a ``bytes`` value; :func:`ensure_private_file`
  creates or tightens a file another library will open (SQLite's ``ledger.db``).

This module is a leaf: it imports nothing from ``worker`` (``worker.crypto`` builds on it) and
only the standard library, so CLI paths stay fast. Errors carry a stable ``code`` and a human
message; messages name paths the caller chose, never file contents.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "PRIVATE_DIR_MODE",
    "PRIVATE_FILE_MODE",
    "NotADirectoryPrivateError",
    "NotARegularFileError",
    "PrivateFileError",
    "SymlinkRefusedError",
    "UnsafeDirectoryError",
    "atomic_write_private",
    "ensure_private_file",
    "fsync_dir",
    "private_dir",
    "private_output",
]

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class PrivateFileError(Exception):
    """Root of this module's errors; ``code`` is stable, the message is for humans."""

    code = "private_file_error"

    def __init__(self, message: str, *, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


class SymlinkRefusedError(PrivateFileError):
    """The path (or a directory component we were creating) is a symbolic link."""

    code = "symlink_refused"


class NotARegularFileError(PrivateFileError):
    """The output path exists and is not a regular file (directory, FIFO, device, socket)."""

    code = "not_a_regular_file"


class NotADirectoryPrivateError(PrivateFileError):
    """The directory path exists and is not a directory."""

    code = "not_a_directory"


class UnsafeDirectoryError(PrivateFileError):
    """The directory can be written by group or others, so its entries can be swapped."""

    code = "unsafe_directory"


def _symlink_error(path: Path) -> SymlinkRefusedError:
    return SymlinkRefusedError(
        f"refusing {path}: it is a symbolic link; pass the real path instead", path=path
    )


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _create_dir_component(component: Path) -> None:
    """Create one directory mode 0700 (whatever the umask); refuse a symlink raced into place."""
    created = True
    try:
        os.mkdir(component, PRIVATE_DIR_MODE)
    except FileExistsError:
        created = False  # someone (maybe another of our processes) made it; check what it is
    try:
        fd = os.open(component, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC)
    except OSError as exc:
        st = _lstat(component)
        if st is not None and stat.S_ISLNK(st.st_mode):
            raise _symlink_error(component) from None
        if st is not None and not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryPrivateError(
                f"{component} exists and is not a directory", path=component
            ) from None
        raise PrivateFileError(
            f"cannot open directory {component}: {exc.strerror}", path=component
        ) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISDIR(st.st_mode):  # pragma: no cover - O_DIRECTORY already guarantees it
            raise NotADirectoryPrivateError(f"{component} is not a directory", path=component)
        if created:
            os.fchmod(fd, PRIVATE_DIR_MODE)
    finally:
        os.close(fd)


def _check_existing_dir(path: Path, *, allow_sticky: bool) -> None:
    st = _lstat(path)
    if st is None:  # pragma: no cover - callers create it first
        raise PrivateFileError(f"{path} does not exist", path=path)
    if stat.S_ISLNK(st.st_mode):
        raise _symlink_error(path)
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryPrivateError(f"{path} exists and is not a directory", path=path)
    if st.st_mode & 0o022 and not (allow_sticky and st.st_mode & stat.S_ISVTX):
        raise UnsafeDirectoryError(
            f"refusing {path}: group or others can write to it "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); use a directory only you can write to, "
            f"or run: chmod go-w {path}",
            path=path,
        )


def _make_dirs(path: Path) -> None:
    """Create the missing components of ``path``, each mode 0700; existing ones are left alone."""
    missing: list[Path] = []
    probe = path
    while True:
        st = _lstat(probe)
        if st is not None:
            # An existing ancestor may be a symlink (``/tmp`` on some systems): that is the
            # user's choice; only components created here are checked.
            break
        missing.append(probe)
        if probe.parent == probe:  # pragma: no cover - the root always exists
            break
        probe = probe.parent
    for component in reversed(missing):
        _create_dir_component(component)


def private_dir(path: Path) -> Path:
    """Return ``path`` as a private directory, creating it (and missing parents) mode 0700.

    Every directory this call creates gets mode ``0700`` regardless of the umask; an existing
    directory is used as it is (its mode is not changed). Raises :class:`SymlinkRefusedError` if
    ``path`` or a component being created is a symbolic link, :class:`NotADirectoryPrivateError`
    if ``path`` is something else, and :class:`UnsafeDirectoryError` if the final directory can
    be written by group or others.
    """
    path = Path(path)
    st = _lstat(path)
    if st is not None and stat.S_ISLNK(st.st_mode):
        raise _symlink_error(path)
    if st is None:
        _make_dirs(path)
    _check_existing_dir(path, allow_sticky=False)
    return path


def _output_parent(parent: Path) -> None:
    """Prepare the directory an output file goes into.

    Missing components are created 0700. An existing directory may be group/other-writable only
    if it has the sticky bit (``/tmp``): there nobody else can rename or delete our entry, and the
    ``O_EXCL`` temporary file plus ``rename`` cannot be redirected.
    """
    if _lstat(parent) is None:
        _make_dirs(parent)
    st = os.stat(parent)  # the parent may legitimately be reached through a symlink
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryPrivateError(f"{parent} is not a directory", path=parent)
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise UnsafeDirectoryError(
            f"refusing to write into {parent}: group or others can write to it "
            f"(mode {stat.S_IMODE(st.st_mode):04o}) and could swap the file; "
            f"choose another directory or run: chmod go-w {parent}",
            path=parent,
        )


def _check_output_target(path: Path) -> None:
    st = _lstat(path)
    if st is None:
        return
    if stat.S_ISLNK(st.st_mode):
        raise _symlink_error(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotARegularFileError(
            f"refusing {path}: it exists and is not a regular file", path=path
        )


@contextlib.contextmanager
def private_output(path: Path) -> Iterator[BinaryIO]:
    """Open a private, atomically replaced output file for writing; yields a binary file.

    The data is written to ``.<name>.<random>.tmp`` beside ``path`` (created ``O_EXCL |
    O_NOFOLLOW``, mode 0600), flushed and ``fsync``-ed when the ``with`` block ends normally, then
    renamed onto ``path`` (an existing regular file is replaced). If the block raises, the
    temporary file is removed and ``path`` is untouched. Missing parent directories are created
    0700. Raises :class:`SymlinkRefusedError` if ``path`` is a symlink (its target is never
    opened) and :class:`NotARegularFileError` if it is a directory, FIFO or device.
    """
    path = Path(path)
    if not path.name or path.name in (".", ".."):
        raise NotARegularFileError(f"refusing {path}: not a file name", path=path)
    _check_output_target(path)
    parent = path.parent
    _output_parent(parent)
    tmp = parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(
        tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, PRIVATE_FILE_MODE
    )
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)  # exact mode whatever the umask
        handle = os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        _check_output_target(path)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(parent)


def atomic_write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically as a 0600 file (see :func:`private_output`)."""
    with private_output(path) as out:
        out.write(data)


def ensure_private_file(path: Path, *, create: bool = True) -> None:
    """Create ``path`` empty mode 0600 if missing, or tighten an existing file to 0600.

    For files another library opens itself (SQLite creates ``ledger.db`` with the umask, and its
    ``-wal``/``-shm`` files copy the database file's mode). Never follows a symlink. With
    ``create=False`` a missing file is left missing. A file owned by another user is left as it
    is (only its owner may change its mode).
    """
    path = Path(path)
    flags = os.O_RDONLY | _NOFOLLOW | _CLOEXEC | (os.O_CREAT if create else 0)
    try:
        fd = os.open(path, flags, PRIVATE_FILE_MODE)
    except FileNotFoundError:
        if create:
            raise
        return
    except OSError:
        st = _lstat(path)
        if st is not None and stat.S_ISLNK(st.st_mode):
            raise _symlink_error(path) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotARegularFileError(f"{path} is not a regular file", path=path)
        if stat.S_IMODE(st.st_mode) & 0o077 and st.st_uid == os.geteuid():
            os.fchmod(fd, stat.S_IMODE(st.st_mode) & 0o700)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    """``fsync`` a directory so a rename in it survives a crash (best effort)."""
    try:
        dfd = os.open(directory, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(dfd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(dfd)
