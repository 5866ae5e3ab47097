"""Tenancy in the ledger (issue 17): the tenant slug, namespaced subject pseudonyms, the tenant on
audit entries, and a ledger written before tenancy (schema 0011) upgraded in place: its subjects
are still found under the default tenant and its audit log still verifies (chain, MACs) through
``facemedia audit verify``, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from worker.ledger.tenants import DEFAULT_TENANT, BadTenant, check_tenant

GENESIS = "0" * 64


def _pre_tenancy_digest(
    prev: str, seq: int, ts: str, event: str, entity: str | None, details: str
) -> str:
    """The entry hash as revisions 0010-0011 computed it (frozen here, as in migration 0010)."""
    body = json.dumps([seq, ts, event, entity, details], separators=(",", ":"))
    return hashlib.sha256((prev + body).encode()).hexdigest()


@pytest.mark.parametrize("good", ["default", "acme", "a", "0-team_b", "x" * 32])
def test_check_tenant_accepts_slugs(good: str) -> None:
    assert check_tenant(good) == good


@pytest.mark.parametrize("bad", ["", "Acme", "-acme", "_a", "a b", "a/b", "é", "x" * 33, "a\n"])
def test_check_tenant_refuses_anything_else(bad: str) -> None:
    with pytest.raises(BadTenant) as caught:
        check_tenant(bad)
    assert caught.value.code == "bad_tenant"
    assert bad not in str(caught.value) or bad == ""  # the value is not echoed


@pytest.fixture(params=["sqlite", "postgresql"])
def legacy(request: pytest.FixtureRequest, make_settings: Any) -> Iterator[dict[str, Any]]:
    """A ledger at revision 0011 (before tenancy) holding one subject, ``u1``, pseudonymized the
    way it was then, and an audit log of three authenticated entries hashed the way they were
    then. Yields the settings and what was written; the container is built by the test."""
    from alembic import command

    from worker.bootstrap import Container, set_container
    from worker.ledger.audit import AuditAuthenticator
    from worker.ledger.db import Database, alembic_config
    from worker.ledger.pseudonyms import Pseudonymizer

    if request.param == "postgresql":
        settings = make_settings(database_url=request.getfixturevalue("pg_url"))
    else:
        settings = make_settings()
    url = settings.effective_database_url
    db = Database(url)  # creates the SQLite file privately (0700 home, 0600 file)
    command.upgrade(alembic_config(url), "0011")
    keyring = Container(settings).keyring  # the local KEK file: no ledger access
    pseudonyms = Pseudonymizer(db, keyring)
    digest = pseudonyms.subject_hash("u1")
    with db.session() as s:
        secret = s.execute(sa.text("SELECT count(*) FROM service_keys")).scalar()
    assert secret == 1
    t = datetime.now(UTC)
    subjects = sa.table(
        "subjects",
        *(sa.column(c) for c in ("id", "subject_hash", "key_id", "created_at")),
        sa.column("research_consent"),
        sa.column("is_minor"),
        sa.column("guardian_consent"),
        sa.column("legal_hold"),
    )
    log = sa.table(
        "audit_log",
        *(sa.column(c) for c in ("seq", "ts", "event", "entity", "details", "prev_hash")),
        sa.column("hash"),
        sa.column("mac"),
    )
    auth = AuditAuthenticator(lambda: keyring)
    hashes = []
    with db.session() as s:
        s.execute(
            sa.insert(subjects).values(
                id="legacy-subject-1",
                subject_hash=digest,
                key_id="legacy-key-1",
                created_at=t,
                research_consent=False,
                is_minor=False,
                guardian_consent=False,
                legal_hold=False,
            )
        )
        key = auth.key(s, create=True)
        prev = GENESIS
        for seq, (event, entity) in enumerate(
            [("subject.created", "legacy-subject-1"), ("job.submitted", "j1"), ("sweep.ran", None)],
            start=1,
        ):
            ts = t.isoformat()
            details = json.dumps({"n": seq}, sort_keys=True, separators=(",", ":"))
            h = _pre_tenancy_digest(prev, seq, ts, event, entity, details)
            s.execute(
                sa.insert(log).values(
                    seq=seq,
                    ts=ts,
                    event=event,
                    entity=entity,
                    details=details,
                    prev_hash=prev,
                    hash=h,
                    mac=AuditAuthenticator.entry_mac(key, h),
                )
            )
            hashes.append(h)
            prev = h
    db.dispose()
    container = Container(settings)
    set_container(container)
    try:
        yield {
            "container": container,
            "digest": digest,
            "secret_key": pseudonyms._secret.get().raw(),
            "hashes": hashes,
        }
    finally:
        container.close()
        set_container(None)


def _verify() -> tuple[int, dict[str, Any]]:
    from worker.cli import app

    result = CliRunner().invoke(app, ["audit", "verify", "--json"])
    return result.exit_code, json.loads(result.stdout)


def test_a_pre_tenancy_ledger_upgrades_and_keeps_working(legacy: dict[str, Any]) -> None:
    """0011 → head: the old subject is found under the default tenant (its pseudonym unchanged),
    not under another tenant; the old entries verify and belong to the default tenant; a new
    tenant's entries verify too, and moving any entry to another tenant breaks its hash."""
    from worker.ledger.models import AuditEntry, Subject

    c = legacy["container"]
    # The default tenant's pseudonym is the pre-tenancy HMAC, byte for byte.
    plain = hmac.new(legacy["secret_key"], b"u1", hashlib.sha256).hexdigest()
    assert legacy["digest"] == plain == c.pseudonyms.subject_hash("u1")
    assert c.pseudonyms.subject_hash("u1", tenant=DEFAULT_TENANT) == plain
    ref = c.subjects.find("u1")
    assert ref is not None and ref.id == "legacy-subject-1"
    assert c.subjects.ensure("u1").id == "legacy-subject-1"
    assert c.subjects.find("u1", tenant="acme") is None
    with c.db.session() as s:
        assert s.get(Subject, "legacy-subject-1").tenant == DEFAULT_TENANT
        old = list(s.scalars(sa.select(AuditEntry).order_by(AuditEntry.seq)))
        assert [e.hash for e in old] == legacy["hashes"]
        assert {e.tenant for e in old} == {DEFAULT_TENANT}

    code, report = _verify()
    assert code == 0 and report["ok"], report
    assert report["rows"] == 3 and report["legacy_rows"] == 0

    # Another tenant's u1 is another subject, with its own entry in that tenant.
    acme = c.subjects.ensure("u1", tenant="acme")
    assert acme.id != "legacy-subject-1"
    assert c.subjects.find("u1", tenant="acme") == acme
    assert c.subjects.find("u1") == ref
    assert c.pseudonyms.subject_hash("u1", tenant="acme") not in (
        plain,
        c.pseudonyms.subject_hash("u1", tenant="bravo"),
    )
    with c.db.session() as s:
        entry = s.scalars(sa.select(AuditEntry).where(AuditEntry.entity == acme.id)).one()
        assert (entry.event, entry.tenant) == ("subject.created", "acme")
        assert "acme" not in entry.details  # a column, not a detail
        assert s.get(Subject, acme.id).tenant == "acme"
        acme_seq = entry.seq
    code, report = _verify()
    assert code == 0 and report["ok"], report

    # Moving an entry between tenants is an edit the hash catches (both directions).
    for seq, tenant in ((acme_seq, DEFAULT_TENANT), (2, "acme")):
        with c.db.session() as s:
            row = s.get(AuditEntry, seq)
            before, row.tenant = row.tenant, tenant
        code, report = _verify()
        assert code == 1
        assert {"code": "hash_mismatch", "seq": seq} in [
            {"code": p["code"], "seq": p["seq"]} for p in report["problems"]
        ], report
        with c.db.session() as s:
            s.get(AuditEntry, seq).tenant = before
    code, report = _verify()
    assert code == 0 and report["ok"], report


def test_audit_append_refuses_a_bad_tenant(embedded: Any) -> None:
    from worker.ledger import audit

    with pytest.raises(BadTenant), embedded.db.session() as s:
        audit.append(s, "x.y", None, tenant="Not A Slug")
    with pytest.raises(BadTenant):
        embedded.subjects.ensure("u1", tenant="../x")
