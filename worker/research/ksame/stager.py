"""Staging at job time: the sampler's k-Same material encrypted under the subject's key as
class ``staging`` (key ``staging/{staged_id}``, with its TTL) and its
:class:`~worker.ledger.models.StagedFace` row, once per job."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select

from worker.ids import new_id
from worker.ledger.db import Database
from worker.ledger.models import StagedFace
from worker.objects.layout import staging_key
from worker.objects.records import ObjectRecords, ObjectSpec
from worker.research.store import store_once

from .material import StagedMaterial, pack

__all__ = ["Stager"]

log = structlog.get_logger("facemedia.research")


class Stager:
    """Stores a job's k-Same material (class ``staging``, expiring after
    ``retention.staging``) and its :class:`StagedFace` row."""

    def __init__(self, db: Database, records: ObjectRecords) -> None:
        self.db = db
        self.records = records

    @property
    def ttl(self) -> timedelta:
        """How long staged material waits for its batch (24 h if kept until revoked)."""
        return self.records.ttl("staging") or timedelta(hours=24)

    def exists(self, job_id: str) -> bool:
        """True if ``job_id`` was staged already (its row may be gone once its batch ran)."""
        with self.db.session() as s:
            found = s.scalars(select(StagedFace.id).where(StagedFace.source_job_id == job_id))
            return found.first() is not None

    def stage(
        self,
        *,
        job_id: str,
        subject_id: str,
        key_id: str,
        material: StagedMaterial,
        quasi: dict[str, Any],
    ) -> str | None:
        """Encrypt and store the material, record the row; its id, or ``None`` if the job was
        staged already (what this call stored is deleted again)."""
        staged_id = new_id()

        def row(object_id: str, t: datetime) -> StagedFace:
            return StagedFace(
                id=staged_id,
                object_id=object_id,
                subject_id=subject_id,
                source_job_id=job_id,
                media_kind="image",
                quasi=quasi,
                created_at=t,
                expires_at=t + self.ttl,
            )

        spec = ObjectSpec(
            staging_key(staged_id),
            "staging",
            job_id=job_id,
            subject_id=subject_id,
            name="staged.npz",
            content_type="application/octet-stream",
        )
        if not store_once(self.records, spec, key_id, pack(material), row, "research.staged"):
            return None
        log.info("research.staged", job_id=job_id, faces=len(material.faces))
        return staged_id
