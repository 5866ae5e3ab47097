"""worker.private_files: modes, symlinks refused, atomic replace, temp files cleaned up."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker.private_files import (
    NotARegularFileError,
    PrivateFileError,
    SymlinkRefusedError,
    UnsafeDirectoryError,
    atomic_write_private,
    ensure_private_file,
    private_dir,
    private_output,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """Run the test under umask 000 so modes come from the code, not the environment."""
    old = os.umask(0)
    yield
    os.umask(old)


def test_private_dir_creates_every_component_0700(tmp_path: Path, loose_umask: object) -> None:
    target = tmp_path / "a" / "b" / "c"
    assert private_dir(target) == target
    for d in (tmp_path / "a", tmp_path / "a" / "b", target):
        assert _mode(d) == 0o700, d


def test_private_dir_leaves_existing_dir_mode(tmp_path: Path) -> None:
    existing = tmp_path / "mine"
    existing.mkdir()
    os.chmod(existing, 0o755)
    private_dir(existing / "sub")
    assert _mode(existing) == 0o755
    assert _mode(existing / "sub") == 0o700


def test_private_dir_refuses_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(SymlinkRefusedError) as info:
        private_dir(link)
    assert info.value.code == "symlink_refused"
    # A dangling symlink is refused too and nothing is created where it points.
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(SymlinkRefusedError):
        private_dir(dangling)
    assert not (tmp_path / "nowhere").exists()


def test_private_dir_refuses_group_or_other_writable(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    for mode in (0o777, 0o770, 0o1777):
        os.chmod(shared, mode)
        with pytest.raises(UnsafeDirectoryError) as info:
            private_dir(shared)
        assert "s3cr3t" not in str(info.value)
        assert info.value.code == "unsafe_directory"


def test_private_output_creates_0600_in_0700_dirs(tmp_path: Path, loose_umask: object) -> None:
    out = tmp_path / "new" / "dir" / "result.jpg"
    with private_output(out) as fh:
        fh.write(b"decrypted")
    assert out.read_bytes() == b"decrypted"
    assert _mode(out) == 0o600
    assert _mode(tmp_path / "new") == 0o700
    assert _mode(tmp_path / "new" / "dir") == 0o700
    assert sorted(p.name for p in out.parent.iterdir()) == ["result.jpg"]


def test_private_output_replaces_regular_file_and_tightens_mode(tmp_path: Path) -> None:
    out = tmp_path / "result.jpg"
    out.write_bytes(b"old contents")
    os.chmod(out, 0o644)
    old_inode = os.stat(out).st_ino
    atomic_write_private(out, b"new")
    assert out.read_bytes() == b"new"
    assert _mode(out) == 0o600
    assert os.stat(out).st_ino != old_inode  # replaced by rename, not rewritten in place


def test_private_output_refuses_symlink_and_leaves_victim(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    os.chmod(victim, 0o644)
    link = tmp_path / "out.jpg"
    link.symlink_to(victim)
    with pytest.raises(SymlinkRefusedError), private_output(link) as fh:
        fh.write(b"attacker-visible")  # pragma: no cover - never reached
    assert victim.read_bytes() == b"precious"
    assert _mode(victim) == 0o644
    assert os.path.islink(link)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jpg", "victim.txt"]
    # A dangling symlink does not get its target created either.
    dangling = tmp_path / "dangling.jpg"
    dangling.symlink_to(tmp_path / "created-through-link")
    with pytest.raises(SymlinkRefusedError):
        atomic_write_private(dangling, b"x")
    assert not (tmp_path / "created-through-link").exists()


def test_symlink_planted_during_write_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    out = tmp_path / "out.bin"
    with pytest.raises(SymlinkRefusedError), private_output(out) as fh:
        fh.write(b"secret")
        out.symlink_to(victim)  # the race: planted after the up-front check
    assert victim.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_private_output_refuses_directory_and_fifo(tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    with pytest.raises(NotARegularFileError):
        atomic_write_private(tmp_path / "adir", b"x")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(NotARegularFileError):
        atomic_write_private(tmp_path / "fifo", b"x")


def test_temp_removed_on_failure_and_target_untouched(tmp_path: Path) -> None:
    out = tmp_path / "result.jpg"
    out.write_bytes(b"previous")
    with pytest.raises(RuntimeError), private_output(out) as fh:
        fh.write(b"half")
        assert len(list(tmp_path.glob(".result.jpg.*.tmp"))) == 1
        raise RuntimeError("decryption failed")
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.jpg"]


def test_temp_file_is_exclusive_and_nofollow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pre-planted file or symlink at the temp name makes the open fail, never followed."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    monkeypatch.setattr("secrets.token_hex", lambda _n: "fixed")
    (tmp_path / ".out.fixed.tmp").symlink_to(victim)
    with pytest.raises(FileExistsError), private_output(tmp_path / "out") as fh:
        fh.write(b"x")  # pragma: no cover - never reached
    assert victim.read_bytes() == b"precious"
    assert not (tmp_path / "out").exists()


def test_output_into_group_writable_dir_refused_but_sticky_allowed(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(UnsafeDirectoryError):
        atomic_write_private(shared / "x", b"x")
    assert list(shared.iterdir()) == []
    os.chmod(shared, 0o1777)  # like /tmp: nobody else can rename or remove our entry
    atomic_write_private(shared / "x", b"x")
    assert _mode(shared / "x") == 0o600


def test_ensure_private_file(tmp_path: Path, loose_umask: object) -> None:
    db = tmp_path / "ledger.db"
    ensure_private_file(db)
    assert _mode(db) == 0o600 and db.read_bytes() == b""
    os.chmod(db, 0o664)
    db.write_bytes(b"data")
    ensure_private_file(db)
    assert _mode(db) == 0o600 and db.read_bytes() == b"data"
    link = tmp_path / "link.db"
    link.symlink_to(db)
    with pytest.raises(SymlinkRefusedError):
        ensure_private_file(link)


def test_errors_share_one_root() -> None:
    for cls in (SymlinkRefusedError, NotARegularFileError, UnsafeDirectoryError):
        assert issubclass(cls, PrivateFileError)
