"""Seed a container's store and ledger with objects directly (fast, many)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from worker.ids import new_id
from worker.ledger.models import StoredObject


def seed_objects(
    container: Any,
    count: int,
    *,
    object_class: str = "output",
    subject: Any = None,
    job_id: str | None = None,
    age: timedelta = timedelta(days=30),
    payload: bytes = b"sample output bytes",
) -> list[str]:
    """``count`` encrypted objects already past their expiry; returns their keys."""
    ref = subject or container.subjects.ensure("seed-subject")
    now = datetime.now(UTC)
    rows = []
    keys = []
    for i in range(count):
        oid = new_id()
        prefix = {"output": "outputs", "research": "research"}.get(object_class, object_class)
        key = f"{prefix}/{job_id or oid}/o{i}" if object_class == "output" else f"{prefix}/{oid}"
        put = container.vault.put(key, object_class, job_id, ref.key_id, payload)
        rows.append(
            StoredObject(
                id=oid,
                key=key,
                object_class=object_class,
                job_id=job_id,
                subject_id=ref.id,
                name=f"o{i}",
                created_at=now - age,
                stored_at=now - age,
                expires_at=now - age + timedelta(days=7),
                version_ids=[put.version_id] if put.version_id else None,
            )
        )
        keys.append(key)
    with container.db.session() as s:
        s.add_all(rows)
    return keys
