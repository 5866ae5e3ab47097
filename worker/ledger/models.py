"""The ledger's tables (SQLAlchemy 2 declarative models).

Nothing here holds the upstream's subject id, a file name, an IP or a device id: subjects are
keyed by an HMAC of the upstream id, jobs and objects by random ids.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from worker.ledger.tenants import DEFAULT_TENANT


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the ledger")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of every ledger table."""


def _tenant_column() -> Mapped[str]:
    """The owning tenant (migration 0012): pre-tenancy rows belong to the default tenant."""
    return mapped_column(
        String(32),
        nullable=False,
        default=DEFAULT_TENANT,
        server_default=DEFAULT_TENANT,
        index=True,
    )


class Subject(Base):
    """A data subject, known only by a keyed hash of the upstream's id (namespaced by tenant:
    see :mod:`worker.ledger.tenants`)."""

    __tablename__ = "subjects"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = _tenant_column()
    subject_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    key_id: Mapped[str] = mapped_column(String(64), nullable=False)
    research_consent: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    is_minor: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    guardian_consent: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    legal_hold: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    hold_reason: Mapped[str | None] = mapped_column(Text, nullable=True)  # a HoldReason code
    hold_note: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # sealed
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)
    erased_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    erase_requested_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    consent_withdrawn_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class SubjectKeyRow(Base):
    """A subject key, stored only wrapped by a KEK; destroyed on erasure (crypto-shredding)."""

    __tablename__ = "subject_keys"

    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    keyring_id: Mapped[str] = mapped_column(String(255), nullable=False)
    kek_version: Mapped[str] = mapped_column(String(255), nullable=False)
    wrapped: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)
    destroyed_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class ServiceKeyRow(Base):
    """A service secret (e.g. the subject-pseudonym HMAC key), stored wrapped by a KEK."""

    __tablename__ = "service_keys"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    keyring_id: Mapped[str] = mapped_column(String(255), nullable=False)
    kek_version: Mapped[str] = mapped_column(String(255), nullable=False)
    wrapped: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)


class Job(Base):
    """One unit of work: its state machine lives in worker.jobs.service."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_status", "status"),
        # Same (tenant, Idempotency-Key) -> the same job (NULL keys never collide).
        Index("ux_jobs_tenant_idempotency", "tenant", "idempotency_key", unique=True),
        # Webhook deliveries still owed (the rescue pass finds them without a scan).
        Index(
            "ix_jobs_webhook_pending",
            "webhook_state",
            postgresql_where=text("webhook_state = 'pending'"),
            sqlite_where=text("webhook_state = 'pending'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = _tenant_column()
    subject_id: Mapped[str] = mapped_column(ForeignKey("subjects.id"), nullable=False)
    job_type: Mapped[str] = mapped_column(String(32), nullable=False)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    error_code: Mapped[str | None] = mapped_column(String(32), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    legal_hold: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    hold_reason: Mapped[str | None] = mapped_column(Text, nullable=True)  # a HoldReason code
    hold_note: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # sealed
    deliveries: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    retries: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    lease_token: Mapped[str | None] = mapped_column(String(40), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Quasi-identifiers generalized at submit (age band, province, device family), kept only with
    # research consent and only until the job ends (then on its research sample, if any).
    quasi: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    original_deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    # The HTTP API (migration 0012): the caller's Idempotency-Key, the submitting API key's id
    # (never the key), the callback URL and its webhook delivery state (None | "pending" |
    # "delivered" | "dead"), attempts so far and the last error code (never a response body).
    idempotency_key: Mapped[str | None] = mapped_column(String(128), nullable=True)
    api_key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    callback_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    webhook_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    webhook_attempts: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default="0"
    )
    webhook_error: Mapped[str | None] = mapped_column(String(64), nullable=True)


class StoredObject(Base):
    """Every object written to the store, with its class and expiry."""

    __tablename__ = "objects"
    __table_args__ = (
        # Live objects by due time (a deleted row leaves the index: the sweep's stamp only
        # removes from it).
        Index(
            "ix_objects_live_due",
            "expires_at",
            postgresql_where=text("deleted_at IS NULL"),
            sqlite_where=text("deleted_at IS NULL"),
        ),
        # Live objects in key order: the sweep claims a batch of neighbouring due keys without
        # sorting (or walking past) the rows already deleted.
        Index(
            "ix_objects_live_key",
            "key",
            postgresql_where=text("deleted_at IS NULL"),
            sqlite_where=text("deleted_at IS NULL"),
        ),
        Index("ix_objects_job", "job_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key: Mapped[str] = mapped_column(String(512), unique=True, nullable=False)
    object_class: Mapped[str] = mapped_column(String(16), nullable=False)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), nullable=True)
    subject_id: Mapped[str | None] = mapped_column(ForeignKey("subjects.id"), nullable=True)
    name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    content_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)
    stored_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    versions_deleted: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    # Version ids written to the store, when all are known (None: list them before deleting).
    version_ids: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    claim_token: Mapped[str | None] = mapped_column(String(40), nullable=True)
    claim_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class DeletionReceipt(Base):
    """Proof that an object is gone: no personal data, only ids and counts."""

    __tablename__ = "deletion_receipts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    object_id: Mapped[str] = mapped_column(String(40), unique=True, nullable=False)
    object_class: Mapped[str] = mapped_column(String(16), nullable=False)
    versions_removed: Mapped[int] = mapped_column(Integer, nullable=False)
    verified: Mapped[bool] = mapped_column(Boolean, nullable=False)
    reason: Mapped[str] = mapped_column(String(32), nullable=False)
    deleted_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)


class AuditEntry(Base):
    """Append-only, hash-chained audit log (see worker.ledger.audit)."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    # The tenant the entry concerns (operator events: the default tenant); part of the entry's
    # hash when it is not the default tenant (see worker.ledger.audit).
    tenant: Mapped[str] = _tenant_column()
    ts: Mapped[str] = mapped_column(String(40), nullable=False)
    event: Mapped[str] = mapped_column(String(64), nullable=False)
    entity: Mapped[str | None] = mapped_column(String(64), nullable=True)
    details: Mapped[str] = mapped_column(Text, nullable=False)
    prev_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)
    # HMAC-SHA256 under the audit key (a service secret the ledger holds only wrapped); NULL on
    # rows written before migration 0010 (reported as legacy).
    mac: Mapped[str | None] = mapped_column(String(64), nullable=True)


class AuditCheckpoint(Base):
    """A checkpoint written to the object store (the object is the authority; this row is the
    ledger's memory of it, so a checkpoint deleted from the store is noticed)."""

    __tablename__ = "audit_checkpoints"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)
    key: Mapped[str] = mapped_column(String(255), nullable=False)
    written_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)


class Lock(Base):
    """A named lock with an expiry (one sweep at a time; a dead holder's lock lapses)."""

    __tablename__ = "locks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(40), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)


class KekEpoch(Base):
    """One KEK epoch change: the new current KEK version and the older versions it destroys.

    For a KMS keyring ``kek_version`` is the current KMS key's ARN; every process takes the
    current key from the newest row, so a worker never wraps under a key an epoch retired.
    """

    __tablename__ = "kek_epochs"
    __table_args__ = (Index("ix_kek_epochs_keyring", "keyring_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    keyring_id: Mapped[str] = mapped_column(String(255), nullable=False)
    kek_version: Mapped[str] = mapped_column(String(255), nullable=False)
    previous_versions: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    pending_erasures: Mapped[int] = mapped_column(Integer, nullable=False)
    keys_rewrapped: Mapped[int | None] = mapped_column(Integer, nullable=True)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class Revocation(Base):
    """A subject whose research consent was withdrawn: excluded from releases, published or not."""

    __tablename__ = "revocations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    subject_id: Mapped[str] = mapped_column(ForeignKey("subjects.id"), unique=True, nullable=False)
    reason: Mapped[str] = mapped_column(String(32), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)


class ResearchSample(Base):
    """A de-identified research sample (object class ``research``), kept only with consent.

    Linked to its subject only through the ledger's opaque subject id (itself keyed by an HMAC of
    the upstream id), so erasure and withdrawal find it. ``quasi`` holds the quasi-identifiers
    generalized at capture (age band, province, device family, capture month), nothing finer.
    """

    __tablename__ = "research_samples"
    __table_args__ = (Index("ix_research_samples_subject", "subject_id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    object_id: Mapped[str] = mapped_column(ForeignKey("objects.id"), unique=True, nullable=False)
    subject_id: Mapped[str] = mapped_column(ForeignKey("subjects.id"), nullable=False)
    # The job whose original it was derived from: one sample per job (idempotent capture).
    source_job_id: Mapped[str | None] = mapped_column(String(40), unique=True, nullable=True)
    media_kind: Mapped[str] = mapped_column(String(8), nullable=False)
    operator: Mapped[str] = mapped_column(String(32), nullable=False)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    faces: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    gate: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    quasi: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)


class StagedFace(Base):
    """A job's encrypted, aligned face material (object class ``staging``) waiting for a k-Same
    batch of at least k subjects; deleted when its batch is written or its TTL ends."""

    __tablename__ = "staged_faces"
    __table_args__ = (Index("ix_staged_faces_batch", "batch_id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    object_id: Mapped[str] = mapped_column(ForeignKey("objects.id"), unique=True, nullable=False)
    subject_id: Mapped[str] = mapped_column(ForeignKey("subjects.id"), nullable=False)
    source_job_id: Mapped[str | None] = mapped_column(String(40), unique=True, nullable=True)
    media_kind: Mapped[str] = mapped_column(String(8), nullable=False)
    quasi: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    batch_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    claim_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)


class Release(Base):
    """A research dataset release: its own data key and pseudonym key, both wrapped by a KEK."""

    __tablename__ = "releases"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    k_requested: Mapped[int] = mapped_column(Integer, nullable=False)
    k_achieved: Mapped[int | None] = mapped_column(Integer, nullable=True)
    sample_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    suppressed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    operator: Mapped[str | None] = mapped_column(String(32), nullable=True)
    keyring_id: Mapped[str] = mapped_column(String(255), nullable=False)
    kek_version: Mapped[str] = mapped_column(String(255), nullable=False)
    wrapped_data_key: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    wrapped_pseudonym_key: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    manifest_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)
    published_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    # The sequence number of the newest signed revocation list (only grows; migration 0009).
    revocation_seq: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default="0"
    )


class ReleaseGrant(Base):
    """A researcher's access to a release: the release key wrapped to their X25519 public key
    (the wrapped key itself is an object in the store; here only the key's fingerprint)."""

    __tablename__ = "release_grants"
    __table_args__ = (UniqueConstraint("release_id", "fingerprint"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    release_id: Mapped[str] = mapped_column(ForeignKey("releases.id"), nullable=False)
    fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)


class ResearchFunnel(Base):
    """How many candidate jobs each research-sampling decision took, per calendar month of the
    decision: aggregate counts only (no job, subject or sample id), so ``research release`` and
    ``research status`` can say where candidates went (not sampled, no consent, a minor without
    a guardian's consent, withdrawn, erased, discarded by the gate with its reason, sampled).
    Written by :mod:`worker.research.funnel` when the sampler decides (migration 0011; per
    tenant since 0014)."""

    __tablename__ = "research_funnel"

    # the tenant whose job the decision was about (migration 0014): a release restricted to one
    # tenant counts that tenant's decisions only
    tenant: Mapped[str] = mapped_column(
        String(32), primary_key=True, default=DEFAULT_TENANT, server_default=DEFAULT_TENANT
    )
    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(16), primary_key=True)
    reason: Mapped[str] = mapped_column(String(40), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class ApiKeyRow(Base):
    """An HTTP API key (:mod:`worker.ledger.api_keys`, migration 0013): only the SHA-256 of the
    key text is stored; the webhook secret that signs its jobs' callbacks is stored wrapped by a
    KEK (re-wrapped by every KEK epoch pass). ``rate_per_second``/``burst`` NULL: the default."""

    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(32), nullable=False, index=True)
    key_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    scopes: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    rate_per_second: Mapped[float | None] = mapped_column(nullable=True)
    burst: Mapped[int | None] = mapped_column(Integer, nullable=True)
    keyring_id: Mapped[str] = mapped_column(String(255), nullable=False)
    kek_version: Mapped[str] = mapped_column(String(255), nullable=False)
    wrapped_webhook_secret: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class ApiRateBucket(Base):
    """The ledger's token bucket of one API key (used when the broker is not Redis): tokens left
    and when they were counted, in Unix seconds (a float, so one UPDATE refills and takes on every
    backend: ``tokens = min(burst, tokens + (now - updated_at) * rate) - 1``)."""

    __tablename__ = "api_rate_buckets"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tokens: Mapped[float] = mapped_column(nullable=False)
    updated_at: Mapped[float] = mapped_column(nullable=False)
