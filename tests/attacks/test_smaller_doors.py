"""Issue 13, part 6 — smaller doors, tried from the outside.

Every attack runs the real ``facemedia`` command in a subprocess with ``FACEMEDIA_HOME`` in a
temporary directory and the most permissive umask (000), so any file or directory the code does
not create private on purpose shows up as group/other-readable:

- a symlink planted where ``result --out`` / ``export --out`` / ``crypto decrypt`` writes is
  refused and its target is left untouched;
- decrypted outputs are 0600 and every directory created for them 0700;
- after a job, nothing under ``FACEMEDIA_HOME`` (``ledger.db`` and its ``-wal``/``-shm``, the
  KEK file, the store's objects) is group/other-accessible, and a ledger left readable by an
  older version is tightened;
- the metrics endpoint, started as the worker starts it, listens on 127.0.0.1 only;
- a misspelled setting next to a database URL with a password names the key and the fix and
  never prints the password, from the environment or from a TOML file.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t"
PRECIOUS = b"the victim's file, which must not change\n"


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith("FACEMEDIA_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }
    env["FACEMEDIA_HOME"] = str(home)
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def facemedia(
    *args: str, home: Path, cwd: Path, umask: int = 0o000, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a fresh process (umask 000 unless told otherwise)."""
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        cwd=cwd,
        env=_env(home, **env),
        capture_output=True,
        text=True,
        timeout=300,
        umask=umask,
        check=False,
    )


def _json_line(stdout: str) -> dict[str, object]:
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert lines, stdout
    value = json.loads(lines[-1])
    assert isinstance(value, dict)
    return value


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _loose_entries(root: Path) -> list[str]:
    """Everything under ``root`` (itself included) that group/others can access, or a symlink."""
    bad = []
    for entry in [root, *sorted(root.rglob("*"))]:
        st = os.lstat(entry)
        if stat.S_ISLNK(st.st_mode) or st.st_mode & 0o077:
            bad.append(f"{entry.relative_to(root.parent)} {stat.S_IMODE(st.st_mode):04o}")
    return bad


def _victim(path: Path) -> Path:
    path.write_bytes(PRECIOUS)
    os.chmod(path, 0o644)
    return path


def _assert_victim_untouched(path: Path) -> None:
    assert not path.is_symlink()
    assert path.read_bytes() == PRECIOUS
    assert _mode(path) == 0o644


def _flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps long lines


@dataclass(frozen=True)
class Demo:
    """A FACEMEDIA_HOME after one ``facemedia demo`` under umask 000."""

    home: Path
    work: Path
    job_id: str
    outputs: tuple[str, ...]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    work = tmp_path_factory.mktemp("smaller-doors")
    home = work / "home"  # missing: the CLI creates it
    done = facemedia("demo", "--json", home=home, cwd=work)
    assert done.returncode == 0, done.stderr[-3000:]
    report = _json_line(done.stdout)
    assert report["status"] == "succeeded"
    written = [Path(str(p)) for p in report["written"]]  # type: ignore[attr-defined]
    assert written
    return Demo(home, work, str(report["job_id"]), tuple(p.name for p in written))


def test_everything_under_home_is_private_after_a_job(demo: Demo) -> None:
    home = demo.home
    # The test must look at the real things, not an empty directory.
    assert (home / "ledger.db").is_file()
    assert (home / "keys" / "kek.json").is_file()
    stored = [p for p in (home / "store").rglob("*") if p.is_file()]
    assert stored, "the demo job stored no object"
    demo_out = home / "demo-out" / demo.job_id
    assert sorted(p.name for p in demo_out.iterdir()) == sorted(demo.outputs)
    assert _loose_entries(home) == []
    assert _mode(home) == 0o700


def test_ledger_wal_and_shm_are_private_and_old_modes_are_tightened(demo: Demo) -> None:
    ledger = demo.home / "ledger.db"
    os.chmod(ledger, 0o644)  # as an older version under umask 022 left it
    reader = sqlite3.connect(ledger)  # keeps -wal/-shm on disk while the CLI runs
    try:
        reader.execute("SELECT count(*) FROM sqlite_master").fetchone()
        for suffix in ("-wal", "-shm"):
            assert Path(f"{ledger}{suffix}").exists()
        done = facemedia("status", demo.job_id, "--json", home=demo.home, cwd=demo.work)
        assert done.returncode == 0, done.stderr[-2000:]
        for name in ("ledger.db", "ledger.db-wal", "ledger.db-shm"):
            assert _mode(demo.home / name) == 0o600, name
    finally:
        reader.close()


def test_result_out_onto_a_planted_symlink_is_refused(demo: Demo, tmp_path: Path) -> None:
    victim = _victim(tmp_path / "victim.txt")
    out = tmp_path / "out"
    (out / demo.job_id).mkdir(parents=True)
    planted = out / demo.job_id / demo.outputs[0]
    planted.symlink_to(victim)
    done = facemedia("result", demo.job_id, "--out", str(out), home=demo.home, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "symlink_refused" in _flat(done.stderr)
    _assert_victim_untouched(victim)
    assert planted.is_symlink() and os.readlink(planted) == str(victim)
    assert not [p for p in (out / demo.job_id).iterdir() if p.name.endswith(".tmp")]


def test_result_creates_0600_files_in_0700_directories(demo: Demo, tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    done = facemedia(
        "result", demo.job_id, "--out", str(out), "--json", home=demo.home, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    written = [Path(str(p)) for p in _json_line(done.stdout)["written"]]  # type: ignore[attr-defined]
    assert sorted(p.name for p in written) == sorted(demo.outputs)
    for path in written:
        assert _mode(path) == 0o600
    for directory in (tmp_path / "a", out, out / demo.job_id):
        assert _mode(directory) == 0o700, directory
    assert _loose_entries(tmp_path / "a") == []


def test_export_is_private_and_refuses_a_symlinked_directory(demo: Demo, tmp_path: Path) -> None:
    victim_dir = tmp_path / "victim-dir"
    victim_dir.mkdir(mode=0o755)
    os.chmod(victim_dir, 0o755)
    link = tmp_path / "export-link"
    link.symlink_to(victim_dir)
    done = facemedia("export", "demo-subject", "--out", str(link), home=demo.home, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "symlink_refused" in _flat(done.stderr)
    assert list(victim_dir.iterdir()) == []

    out = tmp_path / "export"
    done = facemedia(
        "export", "demo-subject", "--out", str(out), "--json", home=demo.home, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    files = sorted(p for p in out.rglob("*") if p.is_file())
    names = {p.name for p in files}
    assert "report.json" in names and set(demo.outputs) <= names  # decrypted outputs included
    assert _loose_entries(out) == []


def test_crypto_decrypt_onto_a_planted_symlink_is_refused(demo: Demo, tmp_path: Path) -> None:
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"face bytes " * 100)
    sealed = tmp_path / "sealed.fmx"
    done = facemedia(
        "crypto", "encrypt", str(plain), str(sealed), "--subject", "s", home=demo.home,
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert _mode(sealed) == 0o600
    victim = _victim(tmp_path / "victim.txt")
    target = tmp_path / "decrypted.bin"
    target.symlink_to(victim)
    done = facemedia(
        "crypto", "decrypt", str(sealed), str(target), "--subject", "s", home=demo.home,
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "symlink_refused" in _flat(done.stderr)
    _assert_victim_untouched(victim)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "decrypted.bin",
        "plain.bin",
        "sealed.fmx",
        "victim.txt",
    ]


# ----- the metrics endpoint ------------------------------------------------------------------


def _non_loopback_address() -> str | None:
    """An address of this host other than loopback, if it has one."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("10.255.255.255", 1))  # no packet is sent for UDP connect
        address = str(probe.getsockname()[0])
    except OSError:
        return None
    finally:
        probe.close()
    return None if address.startswith("127.") or address == "0.0.0.0" else address


@pytest.fixture
def metrics_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[int]:
    for key in list(os.environ):
        if key.upper().startswith("FACEMEDIA_") or key == "PROMETHEUS_MULTIPROC_DIR":
            monkeypatch.delenv(key)
    port = free_port()
    monkeypatch.setenv("FACEMEDIA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FACEMEDIA_METRICS_PORT", str(port))
    from worker import metrics_server

    try:
        yield port
    finally:
        metrics_server.stop()


def _serve_as_the_worker_does() -> tuple[str, int]:
    from worker import metrics_server
    from worker.celery_app import _metrics_serve

    _metrics_serve()  # the worker_ready signal handler
    address = metrics_server.served_address()
    assert address is not None
    return address


def test_metrics_endpoint_binds_loopback_by_default(metrics_env: int) -> None:
    host, port = _serve_as_the_worker_does()
    assert (host, port) == ("127.0.0.1", metrics_env)
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    other = _non_loopback_address()
    if other is not None:  # reachable from the network? it must not be
        with pytest.raises(OSError):
            socket.create_connection((other, port), timeout=2).close()


def test_metrics_host_setting_is_honoured(
    metrics_env: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACEMEDIA_METRICS_HOST", "0.0.0.0")
    host, port = _serve_as_the_worker_does()
    assert (host, port) == ("0.0.0.0", metrics_env)


# ----- configuration errors ------------------------------------------------------------------

URL = f"postgresql://u:{SECRET}@h/db"


def test_misspelled_environment_setting_names_the_key_not_the_value(tmp_path: Path) -> None:
    for command in (["status", "x"], ["doctor"]):
        done = facemedia(
            *command,
            home=tmp_path / "home",
            cwd=tmp_path,
            FACEMEDIA_DATABASE_URL=URL,
            FACEMEDIA_DATABSE_URL=URL,
        )
        both = done.stdout + done.stderr
        assert done.returncode == 2, both
        assert SECRET not in both
        assert "unknown setting FACEMEDIA_DATABSE_URL; did you mean FACEMEDIA_DATABASE_URL?" in (
            _flat(done.stderr)
        )
        assert "Traceback" not in both
    assert not (tmp_path / "home").exists()  # nothing was opened with half a configuration


def test_config_file_typos_and_bad_values_never_echo(tmp_path: Path) -> None:
    config = tmp_path / "facemedia.toml"
    config.write_text(
        f'database_url = "{URL}"\n'
        f'databse_url = "{URL}"\n'
        "[retention]\n"
        f'outpus = "{SECRET}"\n'
        f'research = "{SECRET}"\n'
    )
    done = facemedia(
        "status",
        "x",
        home=tmp_path / "home",
        cwd=tmp_path,
        FACEMEDIA_CONFIG=str(config),
        FACEMEDIA_METRICS_PORT=SECRET,
    )
    both = done.stdout + done.stderr
    assert done.returncode == 2, both
    assert SECRET not in both
    message = _flat(done.stderr)
    assert "unknown setting databse_url in the configuration file; did you mean database_url?" in (
        message
    )
    assert "unknown setting retention.outpus in the configuration file; did you mean" in message
    assert "retention.research" in message and "FACEMEDIA_METRICS_PORT" in message


def test_validation_error_text_itself_never_holds_a_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a worker's traceback would print (str of the exception) holds no value either."""
    from pydantic import ValidationError

    from worker.settings import load_settings

    monkeypatch.setenv("FACEMEDIA_RETENTION__OUTPUTS", SECRET)
    monkeypatch.setenv("FACEMEDIA_DATABSE_URL", URL)
    with pytest.raises(ValidationError) as info:
        load_settings(database_url=URL, no_such_key=URL, segment_size=SECRET)
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)
