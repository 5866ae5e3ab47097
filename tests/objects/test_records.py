"""The one "seal, put, record the row with its TTL, audit" helper (worker/objects/records.py),
on the embedded container's real parts: SQLite ledger, LocalStore, local KEK, envelope."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from worker.ledger import audit
from worker.ledger.models import AuditEntry, StoredObject
from worker.objects.errors import ObjectUnavailable
from worker.objects.layout import release_prefix, research_key
from worker.objects.records import ObjectRecords, ObjectSpec
from worker.storage.base import ObjectStore

PLAIN = b"de-identified sample bytes " * 100


@pytest.fixture
def subject(embedded: Any) -> Any:
    return embedded.subjects.ensure("records-subject")


def _row(embedded: Any, key: str) -> StoredObject | None:
    with embedded.db.session() as s:
        row = s.scalars(select(StoredObject).where(StoredObject.key == key)).first()
        if row is not None:
            s.expunge(row)
        return row


def _audited(embedded: Any, event: str, entity: str) -> list[AuditEntry]:
    with embedded.db.session() as s:
        found = list(
            s.scalars(
                select(AuditEntry).where(AuditEntry.event == event, AuditEntry.entity == entity)
            )
        )
        for entry in found:
            s.expunge(entry)
        return found


def test_store_seals_puts_records_the_ttl_and_audits(embedded: Any, subject: Any) -> None:
    records: ObjectRecords = embedded.records
    spec = ObjectSpec(
        research_key("a" * 32),
        "research",
        subject_id=subject.id,
        name="sample.jpg",
        content_type="image/jpeg",
    )
    object_id = records.store(spec, subject.key_id, PLAIN, audit_event="research.sampled")
    # the object: ciphertext in the store, opening only under its context
    stored = (Path(embedded.store.root) / spec.key).read_bytes()
    assert b"de-identified" not in stored
    assert records.vault.read(spec.key, "research", None) == PLAIN
    # the row: class, names, ciphertext size, expiry = stored + retention.research (3 y)
    row = _row(embedded, spec.key)
    assert row is not None and row.id == object_id
    assert (row.object_class, row.subject_id, row.name, row.content_type) == (
        "research",
        subject.id,
        "sample.jpg",
        "image/jpeg",
    )
    assert row.size == len(stored) and row.stored_at is not None
    assert row.expires_at is not None
    assert row.expires_at - row.created_at == embedded.settings.retention.ttl("research")
    # one audit entry naming the object (and its class, nothing personal), MAC'd in the chain
    (entry,) = _audited(embedded, "research.sampled", object_id)
    assert json.loads(entry.details) == {"object_class": "research"}
    with embedded.db.session() as s:
        assert audit.verify(s).ok


def test_the_audit_entry_belongs_to_the_subjects_tenant(embedded: Any) -> None:
    """Every audit entry belongs to a tenant (issue 17): an object's, to its subject's."""
    acme = embedded.subjects.ensure("records-subject", tenant="acme")
    spec = ObjectSpec(research_key("b" * 32), "research", subject_id=acme.id)
    object_id = embedded.records.store(spec, acme.key_id, PLAIN, audit_event="research.sampled")
    (entry,) = _audited(embedded, "research.sampled", object_id)
    assert entry.tenant == "acme"
    with embedded.db.session() as s:
        assert audit.verify(s).ok


def test_a_class_kept_until_revoked_has_no_expiry(embedded: Any) -> None:
    key = release_prefix("b" * 32) + "/index.json"
    embedded.records.put_sealed(ObjectSpec(key, "release", name="index.json"), b"{}\n")
    row = _row(embedded, key)
    assert row is not None and row.expires_at is None and row.size == 3


def test_ttl_follows_the_retention_settings(make_settings: Any) -> None:
    from worker.bootstrap import Container

    c = Container(make_settings(retention={"research": "30m"}))
    try:
        ref = c.subjects.ensure("ttl-subject")
        spec = ObjectSpec(research_key("c" * 32), "research", subject_id=ref.id)
        c.records.store(spec, ref.key_id, PLAIN, audit_event="research.sampled")
        row = _row(c, spec.key)
        assert row is not None and row.expires_at is not None
        assert row.expires_at - row.created_at == timedelta(minutes=30)
    finally:
        c.close()


def test_a_refused_transaction_deletes_what_was_put(embedded: Any, subject: Any) -> None:
    spec = ObjectSpec(research_key("d" * 32), "research", subject_id=subject.id)

    class Refused(Exception):
        pass

    def check(s: Session) -> None:
        raise Refused

    with pytest.raises(Refused):
        embedded.records.store(spec, subject.key_id, PLAIN, audit_event="x", check=check)
    assert not embedded.store.exists(spec.key)
    assert _row(embedded, spec.key) is None


def test_a_duplicate_row_deletes_what_was_put(embedded: Any, subject: Any) -> None:
    first = ObjectSpec(research_key("e" * 32), "research", subject_id=subject.id)
    embedded.records.store(first, subject.key_id, PLAIN, audit_event="research.sampled")
    second = ObjectSpec(research_key("f" * 32), "research", subject_id=subject.id)

    def clash(s: Session, object_id: str, t: Any) -> None:  # the caller's row collides
        s.add(StoredObject(id="9" * 32, key=first.key, object_class="research", created_at=t))

    with pytest.raises(IntegrityError):
        embedded.records.store(second, subject.key_id, PLAIN, audit_event="x", then=clash)
    assert not embedded.store.exists(second.key)
    assert embedded.store.exists(first.key)
    assert _row(embedded, second.key) is None


def test_reserve_records_before_the_upload_then_stamps_it(embedded: Any, subject: Any) -> None:
    spec = ObjectSpec(research_key("1" * 32), "original", subject_id=subject.id)
    with embedded.db.session() as s:
        object_id = embedded.records.reserve(s, spec, at=embedded.records.clock())
    row = _row(embedded, spec.key)
    assert row is not None and row.size is None and row.stored_at is None
    assert row.expires_at is not None  # the sweep's backstop if the upload never finishes
    put = embedded.records.seal(spec, subject.key_id, PLAIN)
    embedded.records.stored(object_id, put)
    row = _row(embedded, spec.key)
    assert row is not None and row.size == put.size and row.stored_at is not None


def test_put_sealed_records_before_the_store_is_touched(
    embedded: Any, dead_store: ObjectStore
) -> None:
    """A release file whose upload fails is still recorded (revocation and the sweep find
    its key); the store's fault is the objects layer's transient error."""
    from worker.objects.vault import Vault

    down = ObjectRecords(
        embedded.db,
        Vault(dead_store, embedded.subject_keys),
        embedded.settings.retention.ttl,
        embedded.records.clock,
    )
    key = release_prefix("2" * 32) + "/signer.pub"
    with pytest.raises(ObjectUnavailable):
        down.put_sealed(ObjectSpec(key, "release", name="signer.pub"), b"pem")
    row = _row(embedded, key)
    assert row is not None and row.size is None and row.object_class == "release"
