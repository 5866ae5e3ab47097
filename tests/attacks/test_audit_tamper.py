"""Attack: rewrite the audit log from the outside (issue 13, part 4; privacy statement §7.2).

The attacker can write the ledger (the SQLite file, or PostgreSQL with a superuser's SQL) and, in
some tests, the store directory, but cannot use the keyring. Each attack is the real one: rows
deleted or re-chained with SHA-256 exactly as the old, unkeyed verify accepted (the test checks
that the old check is fooled), checkpoint objects deleted or replaced on disk. ``facemedia audit
verify --json`` must answer ok=false with the right problem code; an untouched log verifies.

Also: a legal hold's reason is a code from a fixed list (free text is refused, exit 2) and its
note is sealed under the subject's key: not in the ledger file, unreadable after erasure.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.conftest import REGION
from worker.cli import app

GENESIS = "0" * 64
SUBJECT = "tamper-subject"
runner = CliRunner()


# ----- helpers ---------------------------------------------------------------------------------


def cli(*args: str, code: int = 0) -> Any:
    """Run the CLI in-process; parse the JSON it printed when asked for JSON."""
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (result.exit_code, result.output)
    return json.loads(result.stdout) if "--json" in args and code == 0 else result


def verify() -> dict[str, Any]:
    """``facemedia audit verify --json``; the exit code must agree with ``ok``."""
    result = runner.invoke(app, ["audit", "verify", "--json"])
    data: dict[str, Any] = json.loads(result.stdout)
    assert result.exit_code == (0 if data["ok"] else 1), result.output
    for key in ("ok", "rows", "head_seq", "head_hash", "checkpoint_seq", "problems"):
        assert key in data
    return data


def codes(report: dict[str, Any]) -> set[str]:
    return {p["code"] for p in report["problems"]}


def history(rounds: int = 3) -> None:
    """Units of work that append entries: each CLI command ends with a checkpoint."""
    for _ in range(rounds):
        cli("hold", "set", "--subject", SUBJECT, "--reason", "litigation", "--json")
        cli("hold", "release", "--subject", SUBJECT, "--yes", "--json")


def digest(prev: str, seq: int, ts: str, event: str, entity: str | None, details: str) -> str:
    """The unkeyed SHA-256 chain, as anyone can compute it."""
    body = json.dumps([seq, ts, event, entity, details], separators=(",", ":"))
    return hashlib.sha256((prev + body).encode()).hexdigest()


Row = tuple[int, str, str, str | None, str, str, str, str | None]
COLUMNS = "seq, ts, event, entity, details, prev_hash, hash, mac"


def rechain(rows: list[Row]) -> list[Row]:
    """Renumber from 1 and recompute every hash with SHA-256 (the MAC column is left as is:
    the attacker cannot compute it)."""
    out: list[Row] = []
    prev = GENESIS
    for n, (_seq, ts, event, entity, details, _p, _h, mac) in enumerate(rows, start=1):
        h = digest(prev, n, ts, event, entity, details)
        out.append((n, ts, event, entity, details, prev, h, mac))
        prev = h
    return out


def old_verify_accepts(rows: list[Row]) -> bool:
    """The check ``audit verify`` made before authentication: seq order, links, hashes."""
    prev = GENESIS
    for n, (seq, ts, event, entity, details, prev_hash, h, _mac) in enumerate(rows, start=1):
        if seq != n or prev_hash != prev or digest(prev, seq, ts, event, entity, details) != h:
            return False
        prev = h
    return True


class Ledger:
    """Raw SQL on the ledger, outside the service (sqlite3 on the file, or psycopg)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def connect(self) -> Any:
        if self.url.startswith("sqlite"):
            return sqlite3.connect(self.url.split("///", 1)[1])
        import psycopg

        return psycopg.connect(self.url.replace("postgresql+psycopg://", "postgresql://"))

    def run(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        if not self.url.startswith("sqlite"):
            sql = sql.replace("?", "%s")
        conn = self.connect()
        try:
            cur = conn.execute(sql, params)
            rows = cur.fetchall() if cur.description else []
            conn.commit()
            return list(rows)
        finally:
            conn.close()

    def rows(self) -> list[Row]:
        return [tuple(r) for r in self.run(f"SELECT {COLUMNS} FROM audit_log ORDER BY seq")]

    def replace_all(self, rows: list[Row]) -> None:
        conn = self.connect()
        mark = "?" if self.url.startswith("sqlite") else "%s"
        try:
            conn.execute("DELETE FROM audit_log")
            for row in rows:
                conn.execute(
                    f"INSERT INTO audit_log ({COLUMNS}) VALUES ({', '.join([mark] * 8)})", row
                )
            conn.commit()
        finally:
            conn.close()


@pytest.fixture
def logged(embedded: Any) -> Iterator[tuple[Any, Ledger, Path]]:
    """An embedded service with a few units of work done and checkpointed."""
    embedded.subjects.ensure(SUBJECT)
    history()
    ledger = Ledger(embedded.settings.effective_database_url)
    checkpoints = embedded.settings.home_dir / "store" / "checkpoints"
    report = verify()
    assert report["ok"] and report["problems"] == []
    assert report["checkpoint_seq"] == report["head_seq"] == report["rows"] == 7
    assert len(list(checkpoints.glob("audit-*.json"))) == 6  # one per command
    yield embedded, ledger, checkpoints


# ----- the audit log -----------------------------------------------------------------------------


def test_untouched_log_verifies_in_a_fresh_process(logged: tuple[Any, Ledger, Path]) -> None:
    container, _ledger, _cps = logged
    env = {**os.environ, "FACEMEDIA_HOME": str(container.settings.home_dir)}
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "audit", "verify", "--json"],
        env=env,
        capture_output=True,
        timeout=120,
    )
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["ok"] is True, done.stderr
    assert report["checkpoint_seq"] == report["head_seq"] == 7 and report["legacy_rows"] == 0


def test_deleting_the_newest_rows_is_truncation(logged: tuple[Any, Ledger, Path]) -> None:
    _c, ledger, _cps = logged
    ledger.run("DELETE FROM audit_log WHERE seq > 4")
    ledger.run("DELETE FROM audit_checkpoints WHERE seq > 4")  # and the ledger's memory of them
    assert old_verify_accepts(ledger.rows())  # the attack the unkeyed chain could not see
    report = verify()
    assert not report["ok"] and "truncated" in codes(report)
    assert report["head_seq"] == 4 and report["checkpoint_seq"] == 7


def test_deleting_every_row_is_truncation(logged: tuple[Any, Ledger, Path]) -> None:
    _c, ledger, _cps = logged
    ledger.run("DELETE FROM audit_log")
    ledger.run("DELETE FROM audit_checkpoints")
    assert old_verify_accepts(ledger.rows())
    report = verify()
    assert not report["ok"] and report["rows"] == 0
    assert [p["code"] for p in report["problems"]] == ["truncated"]


def test_deleting_a_row_and_rechaining_fails_the_macs(logged: tuple[Any, Ledger, Path]) -> None:
    _c, ledger, cps = logged
    rows = [r for r in ledger.rows() if r[0] != 3]
    forged = rechain(rows)
    assert old_verify_accepts(forged)
    ledger.replace_all(forged)
    report = verify()
    assert not report["ok"] and "mac_invalid" in codes(report)
    assert min(p["seq"] for p in report["problems"] if p["code"] == "mac_invalid") == 3
    # the head moved back under the checkpoint too
    assert "truncated" in codes(report)
    # the service never signs a head past the forgery: later commands' checkpoints are refused
    before = sorted(p.name for p in cps.glob("audit-*.json"))
    history(1)  # rows 7 and 8 appended on the forged chain (7 is at or below checkpoint 7)
    assert sorted(p.name for p in cps.glob("audit-*.json")) == before
    assert not verify()["ok"]


def test_rechained_rows_passed_off_as_legacy_are_caught(logged: tuple[Any, Ledger, Path]) -> None:
    _c, ledger, _cps = logged
    forged: list[Row] = [(*r[:7], None) for r in rechain([r for r in ledger.rows() if r[0] != 5])]
    ledger.replace_all(forged)  # no MAC anywhere: as if written before authentication
    report = verify()
    assert not report["ok"] and "mac_missing" in codes(report)


def test_editing_details_and_rechaining_fails_the_mac(logged: tuple[Any, Ledger, Path]) -> None:
    _c, ledger, _cps = logged
    rows = ledger.rows()
    assert rows[3][2] == "hold.set"
    edited = [
        (*r[:4], json.dumps({"note": False, "reason": "court_order"}), *r[5:]) if r[0] == 4 else r
        for r in rows
    ]
    forged = rechain(edited)
    assert old_verify_accepts(forged)
    ledger.replace_all(forged)
    report = verify()
    assert not report["ok"]
    assert {p["seq"] for p in report["problems"] if p["code"] == "mac_invalid"} == {4, 5, 6, 7}
    assert "checkpoint_mismatch" in codes(report)  # the checkpointed head's hash changed


def test_deleting_the_newest_checkpoints_is_seen(logged: tuple[Any, Ledger, Path]) -> None:
    _c, _ledger, cps = logged
    newest = sorted(cps.glob("audit-*.json"))[-2:]
    for path in newest:
        path.unlink()
    report = verify()
    assert not report["ok"]
    missing = {p["seq"] for p in report["problems"] if p["code"] == "checkpoint_missing"}
    assert missing == {6, 7}


def test_rolling_a_checkpoint_back_is_seen(logged: tuple[Any, Ledger, Path]) -> None:
    _c, ledger, cps = logged
    names = sorted(cps.glob("audit-*.json"))
    older, newest = names[0], names[-1]
    newest.write_bytes(older.read_bytes())  # a validly signed, older head in the newest's place
    # and the ledger cut back to that older head, the ledger's checkpoint memory with it
    old_seq = json.loads(older.read_text())["seq"]
    ledger.run("DELETE FROM audit_log WHERE seq > ?", (old_seq,))
    ledger.run("DELETE FROM audit_checkpoints WHERE seq > ?", (old_seq,))
    report = verify()
    assert not report["ok"] and "checkpoint_rolled_back" in codes(report)
    rolled = [p for p in report["problems"] if p["code"] == "checkpoint_rolled_back"]
    assert rolled[0]["seq"] == 7
    # the next-newest checkpoint still names a head the ledger no longer has
    assert "truncated" in codes(report)


def test_forged_checkpoint_without_the_key_is_invalid(logged: tuple[Any, Ledger, Path]) -> None:
    _c, _ledger, cps = logged
    newest = sorted(cps.glob("audit-*.json"))[-1]
    data = json.loads(newest.read_text())
    data["hash"] = "f" * 64
    newest.write_text(json.dumps(data))
    report = verify()
    assert not report["ok"] and "checkpoint_invalid" in codes(report)


def test_orphan_sweep_never_deletes_checkpoints(logged: tuple[Any, Ledger, Path]) -> None:
    _c, _ledger, cps = logged
    before = sorted(p.name for p in cps.glob("audit-*.json"))
    far = (datetime.now(UTC) + timedelta(days=36600 * 2)).isoformat()
    cli("sweep", "--orphans", "--as-of", far, "--json")
    after = sorted(p.name for p in cps.glob("audit-*.json"))
    assert before and set(before) <= set(after)
    assert verify()["ok"]


def test_every_unit_of_work_ends_checkpointed(embedded: Any, astronaut_jpeg: bytes) -> None:
    """Not only CLI commands: an inline job run and a Celery task (eager here: the same
    ``task_postrun`` signal a worker child sends) leave the head checkpointed."""
    embedded.client.submit(astronaut_jpeg, "detect", subject_id="unit-subject")  # inline run
    report = verify()
    assert report["ok"] and report["head_seq"] and report["checkpoint_seq"] == report["head_seq"]
    first = report["head_seq"]
    assert embedded.client.request_erasure("unit-subject")  # facemedia.privacy.erase task
    report = verify()
    assert report["ok"] and report["head_seq"] > first
    assert report["checkpoint_seq"] == report["head_seq"] and report["unchecked_rows"] == 0


def test_legacy_rows_are_reported_not_fatal(embedded: Any) -> None:
    from worker.ledger import audit

    with embedded.db.session() as s:  # written as before migration 0010: no MAC
        audit.bind(embedded.db.engine, None)
        try:
            audit.append(s, "legacy.entry", None, count=1)
            audit.append(s, "legacy.entry", None, count=2)
        finally:
            audit.bind(embedded.db.engine, embedded.audit_auth)
    embedded.subjects.ensure(SUBJECT)
    history(1)
    report = verify()
    assert report["ok"] and report["legacy_rows"] == 2 and report["rows"] == 5
    # stripping a later row's MAC to pass it off as legacy is caught
    Ledger(embedded.settings.effective_database_url).run(
        "UPDATE audit_log SET mac = NULL WHERE seq = 4"
    )
    report = verify()
    assert not report["ok"] and "mac_missing" in codes(report)


def test_truncation_on_postgresql(make_settings: Callable[..., Any], pg_url: str) -> None:
    from worker.bootstrap import Container, set_container

    container = Container(make_settings(database_url=pg_url))
    set_container(container)
    try:
        container.subjects.ensure(SUBJECT)
        history(2)
        report = verify()
        assert report["ok"] and report["checkpoint_seq"] == report["head_seq"] == 5
        ledger = Ledger(pg_url)
        # delete one row and re-chain: the old check is fooled, the MACs are not
        forged = rechain([r for r in ledger.rows() if r[0] != 2])
        assert old_verify_accepts(forged)
        ledger.replace_all(forged)
        report = verify()
        assert not report["ok"] and {"mac_invalid", "truncated"} <= codes(report)
        # cut the newest rows (and the ledger's checkpoint memory)
        ledger.run("DELETE FROM audit_log WHERE seq > 2")
        ledger.run("DELETE FROM audit_checkpoints")
        report = verify()
        assert not report["ok"] and "truncated" in codes(report) and report["head_seq"] == 2
    finally:
        container.close()
        set_container(None)


def test_checkpoints_are_object_locked_on_s3(s3_endpoint: str) -> None:
    import boto3

    from worker.objects.layout import checkpoint_key
    from worker.storage.s3 import S3Store

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION)
    bucket = f"fm-lock-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(
        Bucket=bucket,
        CreateBucketConfiguration={"LocationConstraint": REGION},  # type: ignore[typeddict-item]
        ObjectLockEnabledForBucket=True,
    )
    store = S3Store(s3, bucket, "p")
    key = checkpoint_key(12)
    until = datetime.now(UTC) + timedelta(days=1)
    put = store.put_retained(key, b'{"seq":12}', until)
    head = s3.head_object(Bucket=bucket, Key=f"p/{key}")
    assert head["ObjectLockMode"] == "COMPLIANCE" and head["ObjectLockRetainUntilDate"]
    assert put.version_id is not None
    with pytest.raises(Exception, match=r"(?i)denied|lock|protected"):
        s3.delete_object(Bucket=bucket, Key=f"p/{key}", VersionId=put.version_id)
    # a bulk listing never offers it for deletion; asked for by name, it is there
    assert list(store.keys()) == [] and list(store.keys("checkpoints/")) == [key]


# ----- legal holds -------------------------------------------------------------------------------


def _ledger_bytes(home: Path) -> bytes:
    return b"".join(p.read_bytes() for p in home.glob("ledger.db*") if p.is_file())


def test_free_text_hold_reason_is_refused(embedded: Any) -> None:
    embedded.subjects.ensure("hold-subject")
    words = "Smith v Jones, case 2026-CV-4411"
    refused = runner.invoke(
        app, ["hold", "set", "--subject", "hold-subject", "--reason", words, "--json"]
    )
    assert refused.exit_code == 2
    said = " ".join(refused.output.split())
    assert "unknown_hold_reason" in said and "Smith" not in said
    for code in ("litigation", "court_order", "regulator_request", "law_enforcement"):
        assert code in said
    for code in ("contract_dispute", "security_incident"):
        assert code in said
    rows = Ledger(embedded.settings.effective_database_url).run(
        "SELECT legal_hold, hold_reason FROM subjects"
    )
    assert [tuple(r) for r in rows] == [(0, None)]
    assert words.encode() not in _ledger_bytes(embedded.settings.home_dir)


def test_hold_note_is_sealed_and_shredded_by_erasure(embedded: Any, astronaut_jpeg: bytes) -> None:
    from worker.crypto import CryptoError
    from worker.retention.holds import note_context

    home = embedded.settings.home_dir
    ledger = Ledger(embedded.settings.effective_database_url)
    job_id = embedded.client.submit(astronaut_jpeg, "detect", subject_id="hold-subject")
    subject_id = embedded.subjects.find("hold-subject").id
    note = "Preserve for opposing counsel Jane Roe, matter 4411"
    job_note = "Police reference 77-A for officer Li Wei"
    held = cli(
        "hold", "set", "--subject", "hold-subject", "--reason", "court_order",
        "--note", note, "--json",
    )  # fmt: skip
    assert held["held"] and held["reason"] == "court_order" and held["note"] is True
    cli("hold", "set", "--job", job_id, "--reason", "law_enforcement", "--note", job_note)
    # only the code reaches the ledger and its audit log; the notes are nowhere in clear
    blob = _ledger_bytes(home)
    for text in (note, job_note, "Jane Roe", "Li Wei"):
        assert text.encode() not in blob
    [(reason, sealed)] = ledger.run("SELECT hold_reason, hold_note FROM subjects")
    [(job_reason, job_sealed)] = ledger.run("SELECT hold_reason, hold_note FROM jobs")
    assert (reason, job_reason) == ("court_order", "law_enforcement")
    assert sealed and job_sealed
    details = [
        json.loads(d)
        for (d,) in ledger.run("SELECT details FROM audit_log WHERE event = 'hold.set'")
    ]
    assert details == [
        {"note": True, "reason": "court_order"},
        {"note": True, "reason": "law_enforcement"},
    ]
    # readable through the service while the subject lives (so the note really is kept)
    shown = cli("hold", "show", "--subject", "hold-subject", "--json")
    assert shown["note"] == note and shown["reason"] == "court_order"
    assert cli("hold", "show", "--job", job_id, "--json")["note"] == job_note
    # erasure (after the holds are released) shreds them: the copies an attacker took before
    # no longer open with the service's keys
    cli("hold", "release", "--subject", "hold-subject", "--yes")
    cli("hold", "release", "--job", job_id, "--yes")
    assert ledger.run("SELECT hold_note FROM subjects") == [(None,)]
    cli("erase", "hold-subject", "--yes", "--json")
    for entity, copy in ((subject_id, sealed), (job_id, job_sealed)):
        with pytest.raises(CryptoError):
            embedded.envelope.open(note_context(entity), bytes(copy))
    blob = _ledger_bytes(home)
    for text in (note, job_note):
        assert text.encode() not in blob
    assert verify()["ok"]


def test_migration_drops_legacy_free_text(tmp_path: Path) -> None:
    from alembic import command

    from worker.ledger import audit
    from worker.ledger.db import Database, alembic_config

    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(alembic_config(url), "0009")
    ledger = Ledger(url)
    now = datetime.now(UTC).isoformat()
    ledger.run(
        "INSERT INTO subjects (id, subject_hash, key_id, research_consent, is_minor, "
        "guardian_consent, legal_hold, hold_reason, created_at) "
        "VALUES ('s1', 'h1', 'k1', 0, 0, 0, 1, 'per Jane Roe, case 4411', ?)",
        (now,),
    )
    entries = [
        ("subject.created", "s1", "{}"),
        ("hold.set", "s1", json.dumps({"reason": "per Jane Roe, case 4411"})),
        ("hold.released", "s1", json.dumps({"reason": ""})),
        ("hold.set", "s1", json.dumps({"reason": "litigation"})),
    ]
    prev, rows = GENESIS, []
    for seq, (event, entity, details) in enumerate(entries, start=1):
        h = digest(prev, seq, now, event, entity, details)
        rows.append((seq, now, event, entity, details, prev, h))
        prev = h
    for row in rows:
        ledger.run(
            "INSERT INTO audit_log (seq, ts, event, entity, details, prev_hash, hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            row,
        )
    command.upgrade(alembic_config(url), "head")
    assert ledger.run("SELECT hold_reason FROM subjects") == [(None,)]
    reasons = [json.loads(d).get("reason") for (d,) in ledger.run("SELECT details FROM audit_log")]
    assert reasons == [None, None, None, "litigation"]
    db = Database(url)
    try:
        with db.session() as s:
            report = audit.verify(s)
    finally:
        db.dispose()
    assert report.ok and report.legacy_rows == 4  # re-chained, reported as legacy
