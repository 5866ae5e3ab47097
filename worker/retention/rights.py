"""Subject rights and legal holds: erasure, access export, research-consent withdrawal.

Every operation is idempotent and audited, and takes the ledger's opaque subject id (the CLI and
the client turn an upstream id into it through the pseudonym, in the caller's tenant) and a
keyword-only ``tenant``: a subject or job of another tenant is :class:`NotFound` exactly like an
unknown one (``tenant=None``: the operator, any tenant; the privacy tasks use it, their opaque id
was resolved in the requester's tenant). Audit entries carry the subject's (or job's) tenant.
Held objects survive erasure and withdrawal; an erasure that meets a hold stays pending (the
subject key is kept, or the held data would be destroyed with it) and the first sweep after the
release completes it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import delete, or_, select, update

from worker.crypto import SubjectKeys
from worker.ids import new_id
from worker.jobs import lifecycle
from worker.ledger import audit
from worker.ledger.db import Database
from worker.ledger.errors import NotFound
from worker.ledger.models import (
    AuditEntry,
    DeletionReceipt,
    Job,
    ResearchSample,
    Revocation,
    StagedFace,
    StoredObject,
    Subject,
)
from worker.ledger.tenants import DEFAULT_TENANT
from worker.objects.deleter import Deleter, Doomed
from worker.objects.vault import Vault
from worker.private_files import private_dir, private_output
from worker.retention.holds import (
    MAX_NOTE_CHARS,
    HoldNoteTooLong,
    HoldReason,
    note_context,
    parse_reason,
)

log = structlog.get_logger("facemedia.retention")

_EXPORT_CHUNK = 1 << 20


def utcnow() -> datetime:
    """UTC now."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class RightsResult:
    """Outcome of an erasure or a withdrawal."""

    subject: str
    action: str
    deleted: int
    held: int
    pending: bool
    already_done: bool
    # Erasure only: the subject key is beyond recovery from any copy of the ledger once the
    # KEK version that wrapped it is destroyed (the next KEK epoch; on KMS plus 7 days).
    crypto_complete: bool = False
    crypto_complete_by: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {
            "subject": self.subject,
            "action": self.action,
            "deleted": self.deleted,
            "held": self.held,
            "pending": self.pending,
            "already_done": self.already_done,
            "subject_erased": self.action == "erase" and not self.pending,
            "objects_deleted": self.deleted,
            "crypto_complete": self.crypto_complete,
            "crypto_complete_by": (
                None if self.crypto_complete_by is None else self.crypto_complete_by.isoformat()
            ),
        }


class SubjectRights:
    """Erase, export, withdraw consent; set and release legal holds."""

    def __init__(
        self,
        db: Database,
        vault: Vault,
        keys: SubjectKeys,
        deleter: Deleter,
        clock: Callable[[], datetime] = utcnow,
        on_revoked: Callable[[str], None] | None = None,
        crypto_status: Callable[[str], tuple[bool, datetime | None]] | None = None,
    ) -> None:
        self.db = db
        self.vault = vault
        self.keys = keys
        self.deleter = deleter
        self.clock = clock
        # Refreshes the signed revocation lists of published releases (injected by the
        # container, so this module does not import the release package).
        self.on_revoked = on_revoked
        # (complete, complete_by) of a destroyed subject key's cryptographic erasure (the KEK
        # epoch service, injected by the container).
        self.crypto_status = crypto_status

    # ----- helpers -----------------------------------------------------------------------------

    def _subject(self, s: Any, subject_id: str, tenant: str | None = None) -> Subject:
        row = s.get(Subject, subject_id)
        if row is None or (tenant is not None and row.tenant != tenant):
            raise NotFound("no such subject")
        return row  # type: ignore[no-any-return]

    @staticmethod
    def _job(s: Any, job_id: str, tenant: str | None) -> Job:
        row = s.get(Job, job_id)
        if row is None or (tenant is not None and row.tenant != tenant):
            raise NotFound("no such subject or job")
        return row  # type: ignore[no-any-return]

    def _live_objects(self, subject_id: str, classes: tuple[str, ...] | None = None) -> Any:
        query = select(StoredObject).where(
            StoredObject.subject_id == subject_id, StoredObject.deleted_at.is_(None)
        )
        if classes is not None:
            query = query.where(StoredObject.object_class.in_(classes))
        return query

    def _delete_unheld(
        self, subject_id: str, classes: tuple[str, ...] | None, reason: str
    ) -> tuple[int, int]:
        """Delete the subject's live objects not under a job hold; (deleted, held)."""
        with self.db.session() as s:
            subject = self._subject(s, subject_id)
            rows = list(s.scalars(self._live_objects(subject_id, classes)))
            held_jobs = {
                j
                for j in s.scalars(
                    select(Job.id).where(Job.subject_id == subject_id, Job.legal_hold)
                )
            }
            if subject.legal_hold:
                return 0, len(rows)
        doomed = [Doomed.of(r) for r in rows if r.job_id not in held_jobs]
        held = len(rows) - len(doomed)
        deleted = 0
        for start in range(0, len(doomed), 1000):
            deleted += self.deleter.delete(doomed[start : start + 1000], reason=reason).deleted
        self._forget_research(subject_id)
        return deleted, held

    def _forget_research(self, subject_id: str) -> None:
        """Remove the research-sample and staged-face rows whose object is now deleted (their
        generalized quasi-identifiers go with the sample; a staged face can no longer be
        claimed by a k-Same batch)."""
        with self.db.session() as s:
            gone = select(StoredObject.id).where(
                StoredObject.subject_id == subject_id, StoredObject.deleted_at.is_not(None)
            )
            s.execute(delete(StagedFace).where(StagedFace.object_id.in_(gone)))
            s.execute(delete(ResearchSample).where(ResearchSample.object_id.in_(gone)))

    # ----- erasure -----------------------------------------------------------------------------

    def erase(self, subject_id: str, *, tenant: str | None = DEFAULT_TENANT) -> RightsResult:
        """Delete every original, output and research sample of the subject, destroy the
        subject key (every copy anywhere becomes unreadable), mark the subject erased.
        :class:`NotFound` if the subject is not ``tenant``'s."""
        t = self.clock()
        with self.db.session() as s:
            subject = self._subject(s, subject_id, tenant)
            key_id = subject.key_id
            already = subject.erased_at is not None
            if not already:
                subject.erase_requested_at = subject.erase_requested_at or t
                subject.research_consent = False
                lifecycle.cancel_queued(s, subject_id, at=t)
                self._revoke(s, subject_id, "erasure", t)
                audit.append(s, "subject.erase_requested", subject_id, tenant=subject.tenant)
        if already:
            done, by = self._crypto(key_id)  # after the transaction: it reads the ledger
            return RightsResult(subject_id, "erase", 0, 0, False, True, done, by)
        deleted, held = self._delete_unheld(subject_id, None, reason="erasure")
        self._announce_revocation(subject_id)
        pending = held > 0 or not self._finish_erasure(subject_id)
        log.info("subject.erase", count=deleted, status="pending" if pending else "erased")
        done, by = (False, None) if pending else self._crypto(key_id)
        return RightsResult(subject_id, "erase", deleted, held, pending, False, done, by)

    def _crypto(self, key_id: str) -> tuple[bool, datetime | None]:
        """The cryptographic erasure status of a subject key (see ``crypto_status``)."""
        if self.crypto_status is None:
            return False, None
        return self.crypto_status(key_id)

    def _announce_revocation(self, subject_id: str) -> None:
        """Tell published releases (``on_revoked``: re-sign their revocation lists) that the
        subject is revoked, by withdrawal or by erasure."""
        if self.on_revoked is not None:
            self.on_revoked(subject_id)

    def _finish_erasure(self, subject_id: str) -> bool:
        """Destroy the key and mark erased once nothing live remains. True if erased."""
        with self.db.session() as s:
            subject = self._subject(s, subject_id)
            if subject.erased_at is not None:
                return True
            left = list(s.scalars(self._live_objects(subject_id)))
            if left or subject.legal_hold:
                return False
            key_id, owner = subject.key_id, subject.tenant
        self.keys.destroy(key_id)
        with self.db.session() as s:
            # Compare-and-set: only the row still holding the destroyed key and not yet marked
            # (an erase and a sweep finishing the same subject record one ``subject.erased``).
            marked = s.execute(
                update(Subject)
                .where(
                    Subject.id == subject_id,
                    Subject.key_id == key_id,
                    Subject.erased_at.is_(None),
                )
                .values(erased_at=self.clock()),
                execution_options={"synchronize_session": False},
            )
            if marked.rowcount == 1:  # type: ignore[attr-defined]
                audit.append(s, "subject.erased", subject_id, tenant=owner)
        # SQLite: do not leave the key's last wrapped copy in the -wal file.
        self.db.checkpoint()
        return True

    def complete_pending_erasures(self, as_of: datetime) -> int:
        """Called by the sweep: finish erasures whose holds were released."""
        with self.db.session() as s:
            pending = list(
                s.scalars(
                    select(Subject.id).where(
                        Subject.erase_requested_at.is_not(None),
                        Subject.erased_at.is_(None),
                        ~Subject.legal_hold,
                    )
                )
            )
        done = 0
        for subject_id in pending:
            _deleted, held = self._delete_unheld(subject_id, None, reason="erasure")
            if held == 0 and self._finish_erasure(subject_id):
                done += 1
        return done

    # ----- consent -----------------------------------------------------------------------------

    def _revoke(self, s: Any, subject_id: str, reason: str, t: datetime) -> None:
        if s.scalars(select(Revocation).where(Revocation.subject_id == subject_id)).first():
            return
        s.add(Revocation(id=new_id(), subject_id=subject_id, reason=reason, created_at=t))

    def withdraw_consent(
        self, subject_id: str, *, tenant: str | None = DEFAULT_TENANT
    ) -> RightsResult:
        """Research samples deleted, the subject excluded from future releases and entered on
        the revocation list of published ones. :class:`NotFound` if not ``tenant``'s."""
        t = self.clock()
        with self.db.session() as s:
            subject = self._subject(s, subject_id, tenant)
            already = subject.consent_withdrawn_at is not None
            subject.research_consent = False
            subject.consent_withdrawn_at = subject.consent_withdrawn_at or t
            self._revoke(s, subject_id, "consent_withdrawn", t)
            audit.append(s, "subject.consent_withdrawn", subject_id, tenant=subject.tenant)
        deleted, held = self._delete_unheld(subject_id, ("research", "staging"), "withdrawal")
        self._announce_revocation(subject_id)
        return RightsResult(subject_id, "withdraw_consent", deleted, held, held > 0, already)

    # ----- holds -------------------------------------------------------------------------------

    def hold(
        self,
        *,
        subject_id: str | None = None,
        job_id: str | None = None,
        reason: str | HoldReason = "",
        release: bool = False,
        note: str | None = None,
        tenant: str | None = DEFAULT_TENANT,
    ) -> dict[str, Any]:
        """Set (or release) a legal hold on a subject or a job of ``tenant``; audited.
        :class:`NotFound` for an unknown subject or job, or another tenant's.

        ``reason`` must be a :class:`HoldReason` code (free text is refused with
        :class:`UnknownHoldReason`, never stored); ``note`` is optional free text sealed under the
        subject's key (the hold's job's subject for a job hold), so erasure shreds it. Only the
        code reaches the ``hold_reason`` column and the audit log. Releasing drops the note.
        """
        if (subject_id is None) == (job_id is None):
            raise ValueError("name exactly one of subject or job")
        code = None if release else parse_reason(reason)
        if note is not None and len(note) > MAX_NOTE_CHARS:
            raise HoldNoteTooLong()
        entity = str(subject_id or job_id)
        sealed: bytes | None = None
        if code is not None and note:
            with self.db.session() as s:
                key_id = self._hold_key_id(s, subject_id, job_id, tenant)
            sealed = self.vault.envelope.seal(key_id, note_context(entity), note.encode("utf-8"))
        with self.db.session() as s:
            row = self._hold_row(s, subject_id, job_id, tenant)
            released = row.hold_reason
            row.legal_hold = not release
            row.hold_reason = None if code is None else code.value
            row.hold_note = sealed
            if release:
                audit.append(s, "hold.released", entity, tenant=row.tenant, reason=released)
            else:
                audit.append(
                    s,
                    "hold.set",
                    entity,
                    tenant=row.tenant,
                    reason=str(code),
                    note=sealed is not None,
                )
        return {
            "subject": subject_id,
            "job": job_id,
            "held": not release,
            "reason": None if code is None else code.value,
            "note": sealed is not None,
        }

    def release_hold(
        self,
        *,
        subject_id: str | None = None,
        job_id: str | None = None,
        tenant: str | None = DEFAULT_TENANT,
    ) -> dict[str, Any]:
        """Release the legal hold on a subject or job of ``tenant`` (``hold(release=True)``)."""
        return self.hold(subject_id=subject_id, job_id=job_id, release=True, tenant=tenant)

    def _hold_row(
        self, s: Any, subject_id: str | None, job_id: str | None, tenant: str | None
    ) -> Subject | Job:
        """The held subject or job, if it is ``tenant``'s (else :class:`NotFound`)."""
        try:
            if subject_id is not None:
                return self._subject(s, subject_id, tenant)
            return self._job(s, str(job_id), tenant)
        except NotFound:
            raise NotFound("no such subject or job") from None

    def _hold_key_id(
        self, s: Any, subject_id: str | None, job_id: str | None, tenant: str | None
    ) -> str:
        """The key a hold note is sealed under: the subject's (a job's subject for a job)."""
        row = self._hold_row(s, subject_id, job_id, tenant)
        if isinstance(row, Job):
            return self._subject(s, row.subject_id).key_id
        return row.key_id

    def hold_info(
        self,
        *,
        subject_id: str | None = None,
        job_id: str | None = None,
        tenant: str | None = DEFAULT_TENANT,
    ) -> dict[str, Any]:
        """The hold on a subject or job of ``tenant``: held, reason code, and the note opened
        with the subject's key (``note_readable`` is false once the key is destroyed)."""
        from worker.crypto import CryptoError

        if (subject_id is None) == (job_id is None):
            raise ValueError("name exactly one of subject or job")
        entity = str(subject_id or job_id)
        with self.db.session() as s:
            row = self._hold_row(s, subject_id, job_id, tenant)
            held, code, sealed = row.legal_hold, row.hold_reason, row.hold_note
        text: str | None = None
        if sealed is not None:
            try:
                text = self.vault.envelope.open(note_context(entity), sealed).decode("utf-8")
            except CryptoError:
                text = None
        return {
            "subject": subject_id,
            "job": job_id,
            "held": held,
            "reason": code,
            "note": text,
            "note_stored": sealed is not None,
            "note_readable": text is not None,
        }

    # ----- access ------------------------------------------------------------------------------

    def export_entries(
        self, subject_id: str, *, tenant: str | None = DEFAULT_TENANT
    ) -> Iterator[tuple[str, Iterator[bytes]]]:
        """The subject's access export as archive members: ``(name, decrypted chunks)`` pairs,
        ``report.json`` first (every record held about the subject), then each live output and
        research sample as ``<class>/<job id or "none">/<name>``. Nothing is written to disk:
        each object is decrypted segment by segment while its chunks are consumed.

        The subject is checked (:class:`NotFound` if unknown or not ``tenant``'s) and the export
        audited when this is called, before the first member is produced."""
        report, live = self._export_report(subject_id, tenant)
        with self.db.session() as s:
            owner = self._subject(s, subject_id).tenant
            audit.append(s, "subject.exported", subject_id, tenant=owner, objects=len(live))
        return self._export_members(report, live)

    def _export_members(
        self, report: dict[str, Any], live: list[tuple[str, StoredObject]]
    ) -> Iterator[tuple[str, Iterator[bytes]]]:
        body = json.dumps(report, indent=2, default=str).encode("utf-8")
        yield "report.json", iter((body,))
        for name, obj in live:
            yield name, self._decrypted_chunks(obj)

    def _decrypted_chunks(self, obj: StoredObject) -> Iterator[bytes]:
        stream = self.vault.open(obj.key, obj.object_class, obj.job_id)
        try:
            while chunk := stream.read(_EXPORT_CHUNK):
                yield chunk
        finally:
            stream.close()

    def _export_report(
        self, subject_id: str, tenant: str | None
    ) -> tuple[dict[str, Any], list[tuple[str, StoredObject]]]:
        """The access report and the live objects to include, by member name."""
        with self.db.session() as s:
            subject = self._subject(s, subject_id, tenant)
            jobs = list(s.scalars(select(Job).where(Job.subject_id == subject_id)))
            job_ids = [j.id for j in jobs]
            objects = list(
                s.scalars(
                    select(StoredObject).where(
                        or_(
                            StoredObject.subject_id == subject_id,
                            StoredObject.job_id.in_(job_ids),
                        )
                    )
                )
            )
            object_ids = [o.id for o in objects]
            receipts = list(
                s.scalars(select(DeletionReceipt).where(DeletionReceipt.object_id.in_(object_ids)))
            )
            entities = [subject_id, *job_ids, *object_ids]
            trail = list(
                s.scalars(
                    select(AuditEntry)
                    .where(AuditEntry.entity.in_(entities))
                    .order_by(AuditEntry.seq)
                )
            )
            report: dict[str, Any] = {
                "subject": {
                    "id": subject.id,
                    "tenant": subject.tenant,
                    "created_at": subject.created_at,
                    "research_consent": subject.research_consent,
                    "is_minor": subject.is_minor,
                    "guardian_consent": subject.guardian_consent,
                    "legal_hold": subject.legal_hold,
                    "erased_at": subject.erased_at,
                    "consent_withdrawn_at": subject.consent_withdrawn_at,
                },
                "jobs": [
                    {
                        "id": j.id,
                        "type": j.job_type,
                        "params": j.params,
                        "status": j.status,
                        "error_code": j.error_code,
                        "created_at": j.created_at,
                        "finished_at": j.finished_at,
                        "original_deleted_at": j.original_deleted_at,
                        "legal_hold": j.legal_hold,
                    }
                    for j in jobs
                ],
                "objects": [
                    {
                        "id": o.id,
                        "class": o.object_class,
                        "job_id": o.job_id,
                        "name": o.name,
                        "created_at": o.created_at,
                        "expires_at": o.expires_at,
                        "deleted_at": o.deleted_at,
                    }
                    for o in objects
                ],
                "deletion_receipts": [
                    {
                        "object_id": r.object_id,
                        "class": r.object_class,
                        "versions_removed": r.versions_removed,
                        "verified": r.verified,
                        "deleted_at": r.deleted_at,
                    }
                    for r in receipts
                ],
                "audit": [
                    {"seq": a.seq, "ts": a.ts, "event": a.event, "entity": a.entity} for a in trail
                ],
            }
            live = [o for o in objects if o.deleted_at is None and o.object_class != "original"]
        members: list[tuple[str, StoredObject]] = []
        seen: set[str] = set()
        for obj in live:
            safe = obj.name and obj.name not in (".", "..") and Path(obj.name).name == obj.name
            name = f"{obj.object_class}/{obj.job_id or 'none'}/{obj.name if safe else obj.id}"
            if name in seen:
                name = f"{obj.object_class}/{obj.job_id or 'none'}/{obj.id}"
            seen.add(name)
            members.append((name, obj))
        report["files"] = [name for name, _ in members]
        report["counts"] = {"jobs": len(jobs), "objects": len(objects)}
        return report, members

    def export(
        self, subject_id: str, out_dir: Path, *, tenant: str | None = DEFAULT_TENANT
    ) -> dict[str, Any]:
        """An access report: every record and object held about the subject, with the
        decrypted outputs and research samples, written under ``out_dir`` (the members of
        :meth:`export_entries`, each a 0600 file in 0700 directories, never through a
        symlink)."""
        entries = self.export_entries(subject_id, tenant=tenant)
        private_dir(out_dir)
        files: list[str] = []
        counts: dict[str, Any] = {}
        for name, chunks in entries:
            with private_output(out_dir / name) as out:
                if name == "report.json":
                    data = b"".join(chunks)
                    counts = json.loads(data).get("counts", {})
                    out.write(data)
                    continue
                for chunk in chunks:
                    out.write(chunk)
            files.append(name)
        return {
            "subject": subject_id,
            "jobs": counts.get("jobs", 0),
            "objects": counts.get("objects", 0),
            "files": files,
        }
