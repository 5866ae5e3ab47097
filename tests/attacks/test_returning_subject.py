"""Attack (issue 13, part 2): a subject who returns after erasure is a new subject.

Before the fix, submitting again for an erased upstream id hung ~40 s on SQLite and failed with
``database is locked`` (the new subject key was written from inside the open write transaction
of ``SubjectRegistry.ensure``); on PostgreSQL it succeeded, but the row kept
``erase_requested_at``, so the next sweep's pending-erasure pass silently erased the returning
subject's new data and key.

Each test runs on both ledgers (SQLite embedded; PostgreSQL through ``pg_url``), end to end
through the CLI (``submit``, ``erase``, ``sweep``, ``result``) and the job client: submit → erase
→ sweep → submit again for the same upstream id (must be quick and succeed) → sweep → the new
output still decrypts; the old one (and a ciphertext copy of it made before erasure) does not.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select
from typer.testing import CliRunner

from worker.crypto import KeyShreddedError
from worker.jobs.errors import SubmitRefused
from worker.ledger.models import Revocation, Subject
from worker.ledger.subjects import RETIRED_PREFIX, Consent
from worker.objects.layout import output_key

UPSTREAM = "returning-upstream-id"
QUICK = 5.0  # seconds: the old SQLite path took ~40 s and then failed


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request: pytest.FixtureRequest, make_settings: Any) -> Iterator[Any]:
    """A container on the embedded default (SQLite) or on PostgreSQL, installed process-wide
    so the CLI uses it."""
    from worker.bootstrap import Container, set_container

    if request.param == "postgresql":
        settings = make_settings(database_url=request.getfixturevalue("pg_url"))
    else:
        settings = make_settings()
    container = Container(settings)
    set_container(container)
    try:
        yield container
    finally:
        container.close()
        set_container(None)


def cli(*args: str) -> Any:
    """Run the CLI in-process; return its parsed JSON output (exit code 0 required)."""
    from worker.cli import app

    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, (args, result.stdout, result.exception)
    return json.loads(result.stdout)


def cli_fails(*args: str) -> str:
    """Run the CLI in-process, expecting a refusal; return what it printed."""
    from worker.cli import app

    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 2, (args, result.stdout, result.exception)
    return str(result.stdout) + str(getattr(result, "stderr", "") or "")


def _photo(tmp_path: Path, jpeg: bytes) -> Path:
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg)
    return path


def _submit(photo: Path, *extra: str) -> str:
    job_id = str(cli("submit", str(photo), "--subject", UPSTREAM, *extra)["job_id"])
    assert cli("status", job_id)["status"] == "succeeded"  # eager: processed at submit
    return job_id


def _row(container: Any, subject_id: str) -> Subject:
    with container.db.session() as s:
        row = s.get(Subject, subject_id)
        assert row is not None
        return row  # type: ignore[no-any-return]


def _readable(container: Any, job_id: str, out: Path) -> bool:
    from worker.cli import app

    result = CliRunner().invoke(app, ["result", job_id, "--out", str(out), "--json"])
    if result.exit_code != 0:
        return False
    written = json.loads(result.stdout)["written"]
    return bool(written) and json.loads((out / job_id / "faces.json").read_text())["faces"] != []


def test_returning_subject_is_a_new_subject(
    ledger: Any, astronaut_jpeg: bytes, tmp_path: Path
) -> None:
    c = ledger
    photo = _photo(tmp_path, astronaut_jpeg)
    first = _submit(photo, "--research-consent")
    old = c.subjects.find(UPSTREAM)
    assert old is not None
    with c.store.get(output_key(first, "faces.json")) as body:
        stolen = body.read()  # a copy of the ciphertext taken before erasure
    erased = cli("erase", UPSTREAM, "--yes")
    assert erased["pending"] is False
    cli("sweep")

    started = time.monotonic()
    second = _submit(photo)  # no research consent this time
    assert time.monotonic() - started < QUICK

    cli("sweep")  # the pass that used to erase the returning subject's new data
    cli("keys", "retire", "--yes")  # and a KEK epoch change: the new key is re-wrapped

    assert _readable(c, second, tmp_path / "new")  # the new data is kept
    new = c.subjects.find(UPSTREAM)
    assert new is not None and new.id != old.id and new.key_id != old.key_id
    assert not _readable(c, first, tmp_path / "old")  # the old erasure stays complete
    with pytest.raises(KeyShreddedError):
        c.envelope.open(
            {"object_key": output_key(first, "faces.json"), "object_class": "output"}
            | {"job_id": first},
            stolen,
        )
    assert c.subject_keys.is_destroyed(old.key_id)
    assert not c.subject_keys.is_destroyed(new.key_id)
    assert list(c.store.keys(f"outputs/{first}/")) == []

    before, after = _row(c, old.id), _row(c, new.id)
    assert before.erased_at is not None and before.subject_hash == RETIRED_PREFIX + old.id
    assert after.erased_at is None and after.erase_requested_at is None
    assert after.consent_withdrawn_at is None and after.research_consent is False
    with c.db.session() as s:
        revoked = set(s.scalars(select(Revocation.subject_id)))
    assert old.id in revoked and new.id not in revoked  # old releases keep revoking the old

    # Erasing the upstream id now erases the new subject (and only it).
    assert cli("erase", UPSTREAM, "--yes")["pending"] is False
    assert not _readable(c, second, tmp_path / "new2")
    assert c.subjects.find(UPSTREAM) == new


def test_returning_with_consent_is_eligible_again(ledger: Any, astronaut_jpeg: bytes) -> None:
    """Research consent is only what is given now; the new subject is not revoked, so its
    samples may enter future releases while the old subject's revocation stands."""
    from worker.research.store import ineligible

    c = ledger
    c.client.submit(astronaut_jpeg, "detect", subject_id=UPSTREAM, consent=Consent(research=True))
    old = c.subjects.find(UPSTREAM)
    assert old is not None
    c.rights.withdraw_consent(old.id)
    c.rights.erase(old.id)
    c.client.submit(astronaut_jpeg, "detect", subject_id=UPSTREAM, consent=Consent(research=True))
    new = c.subjects.find(UPSTREAM)
    assert new is not None and new.id != old.id
    assert ineligible(_row(c, new.id)) is None
    assert ineligible(_row(c, old.id)) == "erased"


def test_pending_erasure_refuses_then_returns(
    ledger: Any, astronaut_jpeg: bytes, tmp_path: Path
) -> None:
    """While an erasure is pending (a legal hold), a submission is refused with
    ``subject_erased``, never accepted into data the erasure would then destroy; once the hold
    is released and the sweep completes the erasure, the subject returns as a new subject."""
    c = ledger
    photo = _photo(tmp_path, astronaut_jpeg)
    first = _submit(photo)
    cli("hold", "set", "--subject", UPSTREAM, "--reason", "litigation")
    assert cli("erase", UPSTREAM, "--yes")["pending"] is True
    printed = cli_fails("submit", str(photo), "--subject", UPSTREAM)
    assert "subject_erased" in printed
    with pytest.raises(SubmitRefused) as refused:
        c.client.submit(astronaut_jpeg, "detect", subject_id=UPSTREAM)
    assert refused.value.code == "subject_erased"
    cli("hold", "release", "--subject", UPSTREAM, "--yes")
    cli("sweep")
    second = _submit(photo)
    cli("sweep")
    assert _readable(c, second, tmp_path / "new")
    assert not _readable(c, first, tmp_path / "old")


def test_sweep_completing_an_erasure_while_the_subject_returns(
    ledger: Any, astronaut_jpeg: bytes, tmp_path: Path
) -> None:
    """The sweep's pending-erasure pass is stopped after it destroyed the key and before it
    marks the subject erased; a submission then is refused. After the pass ends, the
    returning subject gets a new key that no later pass touches."""
    c = ledger
    photo = _photo(tmp_path, astronaut_jpeg)
    first = _submit(photo)
    old = c.subjects.find(UPSTREAM)
    assert old is not None
    c.rights.hold(subject_id=old.id, reason="litigation")
    assert c.rights.erase(old.id).pending
    c.rights.hold(subject_id=old.id, release=True)

    sweeper_thread: list[threading.Thread] = []
    destroyed = threading.Event()
    reached, go = threading.Event(), threading.Event()

    def after(_conn: Any, _cur: Any, statement: str, *_rest: Any) -> None:
        if threading.current_thread() in sweeper_thread and statement.lstrip().upper().startswith(
            "UPDATE SUBJECT_KEYS"
        ):
            destroyed.set()

    def connect(_conn: Any) -> None:
        # the sweep's next transaction after the key destroy: the one marking the subject erased
        if threading.current_thread() in sweeper_thread and destroyed.is_set() and not go.is_set():
            reached.set()
            assert go.wait(30)

    event.listen(c.db.engine, "after_cursor_execute", after)
    event.listen(c.db.engine, "engine_connect", connect)
    errors: list[BaseException] = []

    def sweep() -> None:
        try:
            c.sweeper.run()
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    thread = threading.Thread(target=sweep, daemon=True)
    sweeper_thread.append(thread)
    thread.start()
    try:
        assert reached.wait(30), "the sweep never destroyed the pending subject's key"
        with pytest.raises(SubmitRefused) as refused:
            c.client.submit(astronaut_jpeg, "detect", subject_id=UPSTREAM)
        assert refused.value.code == "subject_erased"
    finally:
        go.set()
        thread.join(30)
    assert not thread.is_alive() and not errors, errors
    assert _row(c, old.id).erased_at is not None

    second = _submit(photo)
    new = c.subjects.find(UPSTREAM)
    assert new is not None and new.key_id != old.key_id
    cli("sweep")
    assert not c.subject_keys.is_destroyed(new.key_id)
    assert _readable(c, second, tmp_path / "new")
    assert not _readable(c, first, tmp_path / "old")
