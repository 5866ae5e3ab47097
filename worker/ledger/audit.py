"""Append-only audit log, hash-chained and authenticated with a key the ledger does not hold.

Each row stores ``hash = SHA-256(prev_hash ‖ canonical(seq, ts, event, entity, details))`` (the
first row chains from 64 zeros) and ``mac = HMAC-SHA256(audit key, "facemedia-audit-entry-v1" ‖
hash)``. The audit key is a service secret (``service_keys`` row ``audit-mac``) stored only
wrapped by the keyring's KEK, so someone who can write the database but cannot use the keyring
can delete rows but cannot compute the MAC of a row they forged or re-chained. Deleting the newest
rows (or all of them) is caught against the signed checkpoints kept outside the ledger
(:mod:`worker.ledger.checkpoints`). Details hold ids, counts and codes only, never personal data
or free text.

Every entry belongs to a tenant (:mod:`worker.ledger.tenants`; operator events to the default
tenant), kept in the ``tenant`` column. A default-tenant entry hashes exactly as entries did
before tenancy (so the rows written then, which migration 0012 gave the default tenant, still
verify); any other tenant's entry hashes ``canonical(seq, ts, event, entity, details, tenant)``,
so moving an entry to or from another tenant breaks its hash like any other edit.

Call sites pass only a session: the composition root binds an :class:`AuditAuthenticator` to the
database's engine (:func:`bind`), and :func:`append` finds it through the session. Rows written
before authentication existed (``mac`` NULL, a prefix of the log) are reported as legacy.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from worker.ledger.errors import AuditChainBroken
from worker.ledger.service_keys import SERVICE_KEY_SQL
from worker.ledger.tenants import DEFAULT_TENANT, check_tenant

if TYPE_CHECKING:  # SQLAlchemy and the models are imported by the functions that write or walk
    # through a session: ``facemedia audit verify`` reads over DB-API (:func:`walk_rows`)
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

    from worker.ledger.db import QuickReader
    from worker.ledger.models import AuditEntry

GENESIS = "0" * 64
_PG_AUDIT_LOCK = 0x46_4D_41_55  # "FMAU": serialises appenders on PostgreSQL
AUDIT_KEY_NAME = "audit-mac"
_ENTRY_DOMAIN = b"facemedia-audit-entry-v1\x00"
CHECKPOINT_DOMAIN = b"facemedia-audit-checkpoint-v1\x00"


def _digest(
    prev: str,
    seq: int,
    ts: str,
    event: str,
    entity: str | None,
    details: str,
    tenant: str = DEFAULT_TENANT,
) -> str:
    fields: list[Any] = [seq, ts, event, entity, details]
    if tenant != DEFAULT_TENANT:  # the default tenant's entries hash as before tenancy
        fields.append(tenant)
    body = json.dumps(fields, separators=(",", ":"))
    return hashlib.sha256((prev + body).encode()).hexdigest()


def entry_digest(entry: AuditEntry | AuditRow) -> str:
    """The hash a stored entry must carry (its previous hash, fields and tenant)."""
    return _digest(
        entry.prev_hash,
        entry.seq,
        entry.ts,
        entry.event,
        entry.entity,
        entry.details,
        entry.tenant or DEFAULT_TENANT,
    )


class AuditKeyMissing(Exception):
    """The audit key's row is absent from ``service_keys`` (the log cannot be authenticated)."""


class AuditAuthenticator:
    """Computes entry and checkpoint MACs under the ``audit-mac`` service secret.

    The secret is read through the caller's session (never a nested transaction: on SQLite a
    second writer would wait on the first) and unwrapped by the keyring; the unwrapped key is
    cached per wrapped blob, so a re-wrap under a new KEK version (same secret) is picked up.
    """

    def __init__(self, keyring: Callable[[], Any]) -> None:
        self._keyring = keyring
        self._context = {"purpose": AUDIT_KEY_NAME}
        self._cache: tuple[bytes, bytes] | None = None  # (wrapped blob, raw key)
        self._recent: tuple[float, bytes] | None = None  # (monotonic time read, raw key)
        self._lock = threading.Lock()

    def key(self, session: Session, *, create: bool = False) -> bytes:
        """The raw audit key; created (and added to the caller's transaction) if ``create``."""
        from worker.ledger.models import ServiceKeyRow

        row = session.get(ServiceKeyRow, AUDIT_KEY_NAME)
        if row is None:
            if not create:
                raise AuditKeyMissing("the audit key is not in service_keys")
            raw = os.urandom(32)
            wrapped = self._keyring().wrap(raw, self._context)
            session.add(
                ServiceKeyRow(
                    name=AUDIT_KEY_NAME,
                    keyring_id=wrapped.kek.keyring_id,
                    kek_version=wrapped.kek.version,
                    wrapped=wrapped.blob,
                    created_at=datetime.now(UTC),
                )
            )
            session.flush()
            # not cached: the row commits (or not) with the caller's transaction
            return raw
        return self._unwrap(row.keyring_id, row.kek_version, bytes(row.wrapped))

    def recent_key(self, session: Session) -> bytes | None:
        """The raw audit key as read within the last :data:`AUDIT_KEY_RECHECK_S` seconds, else
        read through ``session`` (:func:`append`, the checkpoint writer: no ``service_keys``
        round trip per entry); None when its row is missing (the caller creates it under the
        chain's lock)."""
        now = time.monotonic()
        with self._lock:
            recent = self._recent
        if recent is not None and now - recent[0] < AUDIT_KEY_RECHECK_S:
            return recent[1]
        try:
            key = self.key(session)
        except AuditKeyMissing:
            return None
        with self._lock:
            self._recent = (now, key)
        return key

    def read_key(self, reader: QuickReader) -> bytes:
        """The raw audit key read over DB-API (:func:`walk_rows`, ``facemedia audit verify``);
        :class:`AuditKeyMissing` when its row is absent."""
        rows = reader.rows(SERVICE_KEY_SQL, {"name": AUDIT_KEY_NAME})
        if not rows:
            raise AuditKeyMissing("the audit key is not in service_keys")
        row = rows[0]
        return self._unwrap(row["keyring_id"], row["kek_version"], bytes(row["wrapped"]))

    def _unwrap(self, keyring_id: str, kek_version: str, wrapped: bytes) -> bytes:
        """The key in a ``service_keys`` row, unwrapped by the keyring (cached per blob)."""
        from worker.crypto import KekRef, WrappedKey

        with self._lock:
            cached = self._cache
        if cached is not None and cached[0] == wrapped:
            return cached[1]
        ref = WrappedKey(KekRef(keyring_id, kek_version), wrapped)
        raw = bytes(self._keyring().unwrap(ref, self._context))
        with self._lock:
            self._cache = (wrapped, raw)
        return raw

    @staticmethod
    def entry_mac(key: bytes, digest: str) -> str:
        """The MAC of one entry (its hash covers the previous hash and every field)."""
        return hmac.new(key, _ENTRY_DOMAIN + digest.encode(), hashlib.sha256).hexdigest()

    @staticmethod
    def checkpoint_mac(key: bytes, body: bytes) -> str:
        """The MAC of a checkpoint's canonical body (a domain distinct from entries)."""
        return hmac.new(key, CHECKPOINT_DOMAIN + body, hashlib.sha256).hexdigest()

    def __repr__(self) -> str:
        return "AuditAuthenticator(<audit-mac wrapped in service_keys>)"


_bound: weakref.WeakKeyDictionary[Engine, AuditAuthenticator] = weakref.WeakKeyDictionary()
_appended: weakref.WeakSet[Engine] = weakref.WeakSet()
_state_lock = threading.Lock()


def bind(engine: Engine, authenticator: AuditAuthenticator | None) -> None:
    """Authenticate every entry appended through sessions on ``engine`` (composition root)."""
    with _state_lock:
        if authenticator is None:
            _bound.pop(engine, None)
        else:
            _bound[engine] = authenticator


def authenticator_for(session: Session) -> AuditAuthenticator | None:
    """The authenticator bound to the session's engine, if any."""
    engine = session.get_bind()
    engine = getattr(engine, "engine", engine)
    with _state_lock:
        return _bound.get(engine)  # type: ignore[arg-type]


def appended(engine: Engine) -> bool:
    """True if this process appended entries on ``engine`` since the last checkpoint."""
    with _state_lock:
        return engine in _appended


def take_appended(engine: Engine) -> bool:
    """Clear and return the appended flag of ``engine`` (the checkpointer re-sets it on failure)."""
    with _state_lock:
        was = engine in _appended
        _appended.discard(engine)
        return was


def mark_appended(engine: Engine) -> None:
    """Note that entries were appended on ``engine`` (a checkpoint is due)."""
    with _state_lock:
        _appended.add(engine)


AUDIT_KEY_RECHECK_S = 30.0
"""How long :func:`append` MACs with the audit key it read last before reading its row again
(the raw key never changes: a KEK epoch only re-wraps it)."""

_LOCK_AND_HEAD = (
    f"SELECT pg_advisory_xact_lock({_PG_AUDIT_LOCK}); "
    "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"
)
"""PostgreSQL: the chain's lock and then its head, two statements in one round trip (the simple
query protocol). Each statement of it takes its own snapshot (READ COMMITTED), so the head is
read after the lock is held: the last entry any earlier appender committed."""


def _entry_insert() -> Any:
    """``INSERT INTO audit_log`` as a Core statement on the table (built once)."""
    global _ENTRY_INSERT
    if _ENTRY_INSERT is None:
        from sqlalchemy import insert

        from worker.ledger.models import AuditEntry

        _ENTRY_INSERT = insert(AuditEntry.__table__)  # type: ignore[arg-type]
    return _ENTRY_INSERT


_ENTRY_INSERT: Any = None


def _chain_head(session: Session, postgres: bool) -> tuple[int, str] | None:
    """Take the chain's lock (PostgreSQL; SQLite's write lock is already held by ``BEGIN
    IMMEDIATE``) and read its last entry's ``(seq, hash)``."""
    if not postgres:
        from sqlalchemy import select

        from worker.ledger.models import AuditEntry

        last = session.execute(
            select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)
        ).first()
        return None if last is None else (int(last[0]), str(last[1]))
    cursor = session.connection().connection.cursor()
    try:
        cursor.execute(_LOCK_AND_HEAD)
        cursor.nextset()  # the lock's result, then the head's
        row = cursor.fetchone()
    finally:
        cursor.close()
    return None if row is None else (int(row[0]), str(row[1]))


def append(
    session: Session,
    event: str,
    entity: str | None = None,
    *,
    tenant: str = DEFAULT_TENANT,
    **details: Any,
) -> AuditEntry:
    """Append one entry inside the caller's transaction (so it commits with the change).

    ``tenant`` is the tenant the entry concerns (a column, covered by the hash; never a
    detail). With an authenticator bound to the engine the entry carries its MAC; without one
    (a bare ``Database`` in a tool or test) it is written unauthenticated and verify reports it.

    The chain's lock is held from the head's read to the caller's commit, so nothing else of
    the caller's runs under it: its pending rows are flushed and the audit key read first;
    then one round trip takes the lock and reads the head, one inserts the entry (a plain
    INSERT, not an ORM flush). The returned entry is not attached to the session.
    """
    from worker.ledger.models import AuditEntry

    check_tenant(tenant)
    bind_ = session.get_bind()
    engine = getattr(bind_, "engine", bind_)
    payload = json.dumps(dict(details), sort_keys=True, separators=(",", ":"), default=str)
    auth = authenticator_for(session)
    key = None
    if auth is not None:
        # read before the lock (held until the caller commits: every statement under it
        # delays every other appender); a missing key is created under the lock
        key = auth.recent_key(session)
    session.flush()  # the caller's own rows, before the lock
    last = _chain_head(session, engine.dialect.name == "postgresql")
    seq = 1 if last is None else last[0] + 1
    prev = GENESIS if last is None else last[1]
    ts = datetime.now(UTC).isoformat()
    digest = _digest(prev, seq, ts, event, entity, payload, tenant)
    mac = None
    if auth is not None:
        if key is None:
            # under the PostgreSQL advisory lock / SQLite's write lock: creating it is race-free
            key = auth.key(session, create=True)
        mac = auth.entry_mac(key, digest)
    values = {
        "seq": seq,
        "tenant": tenant,
        "ts": ts,
        "event": event,
        "entity": entity,
        "details": payload,
        "prev_hash": prev,
        "hash": digest,
        "mac": mac,
    }
    session.connection().execute(_entry_insert(), values)  # Core: no ORM bulk insert
    mark_appended(engine)  # type: ignore[arg-type]
    return AuditEntry(**values)


# ----- verification -------------------------------------------------------------------------------

#: Stable problem codes of :func:`verify` and ``facemedia audit verify``.
PROBLEM_CODES: Mapping[str, str] = {
    "row_missing": "rows are missing from the sequence (deleted)",
    "chain_broken": "a row's previous-hash link does not match the row before it",
    "hash_mismatch": "a row's content does not match its hash (edited)",
    "mac_invalid": "a row's MAC does not verify (forged or re-chained without the audit key)",
    "mac_missing": "an unauthenticated row where only authenticated rows may be",
    "key_missing": "the audit key is missing from service_keys: MACs cannot be checked",
    "truncated": "rows after a checkpointed head are missing (the newest rows were deleted)",
    "checkpoint_mismatch": "the row at a checkpoint's sequence number has another hash",
    "checkpoint_missing": "a checkpoint the ledger recorded is gone from the object store",
    "checkpoint_rolled_back": "a checkpoint object was replaced by an older checkpoint",
    "checkpoint_invalid": "a checkpoint object does not parse or its MAC does not verify",
    "checkpoint_unavailable": "the checkpoints in the object store could not be read",
}


@dataclass(frozen=True)
class Problem:
    """One finding of :func:`verify`: a stable code, the sequence number it concerns, a message."""

    code: str
    seq: int | None
    message: str

    def to_json(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {"code": self.code, "seq": self.seq, "message": self.message}


@dataclass(frozen=True)
class ChainState:
    """What the walk of the rows found (before any checkpoint is consulted)."""

    rows: int
    head_seq: int | None
    head_hash: str | None
    legacy_rows: int
    hashes: Mapping[int, str]
    problems: tuple[Problem, ...]


@dataclass(frozen=True)
class AuditReport:
    """The outcome of :func:`verify` (chain and MACs) or of the checkpointed verify."""

    ok: bool
    rows: int
    head_seq: int | None = None
    head_hash: str | None = None
    checkpoint_seq: int | None = None
    legacy_rows: int = 0
    unchecked_rows: int = 0
    problems: tuple[Problem, ...] = field(default_factory=tuple)

    @property
    def first_bad_seq(self) -> int | None:
        """The sequence number of the first problem (kept from the previous JSON shape)."""
        return self.problems[0].seq if self.problems else None

    @property
    def reason(self) -> str | None:
        """The first problem's message (kept from the previous JSON shape)."""
        return self.problems[0].message if self.problems else None

    def to_json(self) -> Mapping[str, Any]:
        """A JSON-ready view."""
        return {
            "ok": self.ok,
            "rows": self.rows,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "checkpoint_seq": self.checkpoint_seq,
            "legacy_rows": self.legacy_rows,
            "unchecked_rows": self.unchecked_rows,
            "problems": [p.to_json() for p in self.problems],
            "first_bad_seq": self.first_bad_seq,
            "reason": self.reason,
        }


class AuditRow(NamedTuple):
    """An ``audit_log`` row as read over DB-API (:func:`walk_rows`): the columns the hash and
    the MAC cover, named as :class:`~worker.ledger.models.AuditEntry`'s attributes."""

    seq: int
    tenant: str | None
    ts: str
    event: str
    entity: str | None
    details: str
    prev_hash: str
    hash: str
    mac: str | None


#: The walk's read, in sequence order (the same columns as :class:`AuditRow`).
ENTRIES_SQL = (
    "SELECT seq, tenant, ts, event, entity, details, prev_hash, hash, mac"
    " FROM audit_log ORDER BY seq"
)


def walk(
    session: Session, remember: Callable[[int], bool] | None = None, limit: int = 50
) -> ChainState:
    """Walk every row in sequence order, checking order, links, hashes and MACs, through an
    ORM session (the key through the authenticator bound to its engine).

    ``remember(seq)`` selects rows whose hash is kept in the result (for checkpoint checks).
    At most ``limit`` problems are listed (the first ones).
    """
    from sqlalchemy import select

    from worker.ledger.models import AuditEntry

    auth = authenticator_for(session)
    entries: Iterable[AuditEntry] = session.scalars(
        select(AuditEntry).order_by(AuditEntry.seq).execution_options(yield_per=2000)
    )
    return _walk(entries, None if auth is None else lambda: auth.key(session), remember, limit)


def walk_rows(
    reader: QuickReader,
    auth: AuditAuthenticator | None,
    remember: Callable[[int], bool] | None = None,
    limit: int = 50,
) -> ChainState:
    """:func:`walk` over a DB-API connection (no SQLAlchemy: ``facemedia audit verify``), the
    rows streamed in sequence order; ``auth`` reads and unwraps the audit key."""
    entries = (AuditRow(**row) for row in reader.iter_rows(ENTRIES_SQL))
    return _walk(entries, None if auth is None else lambda: auth.read_key(reader), remember, limit)


def _walk(
    entries: Iterable[AuditEntry | AuditRow],
    read_key: Callable[[], bytes] | None,
    remember: Callable[[int], bool] | None,
    limit: int,
) -> ChainState:
    """The walk itself; ``read_key`` is called once, at the first authenticated row (None: no
    authenticator, MACs not checked)."""
    problems: list[Problem] = []
    key: bytes | None = None
    key_state = "unknown"
    prev = GENESIS
    expected = 1
    rows = 0
    legacy = 0
    authenticated_seen = False
    head: AuditEntry | AuditRow | None = None
    hashes: dict[int, str] = {}

    def report(code: str, seq: int | None, message: str) -> None:
        if len(problems) < limit:
            problems.append(Problem(code, seq, message))

    for entry in entries:
        rows += 1
        if entry.seq != expected:
            report(
                "row_missing",
                entry.seq,
                f"rows {expected}..{entry.seq - 1} are missing before seq {entry.seq}",
            )
        elif entry.prev_hash != prev:
            report("chain_broken", entry.seq, "previous-hash link broken")
        digest = entry_digest(entry)
        if digest != entry.hash:
            report("hash_mismatch", entry.seq, "row content does not match its hash")
        if entry.mac is None:
            if authenticated_seen:
                report("mac_missing", entry.seq, "unauthenticated row after authenticated rows")
            else:
                legacy += 1
        else:
            authenticated_seen = True
            if key_state == "unknown":
                key_state = "none"
                if read_key is not None:
                    try:
                        key = read_key()
                        key_state = "ok"
                    except AuditKeyMissing:
                        report("key_missing", entry.seq, PROBLEM_CODES["key_missing"])
                else:
                    report("key_missing", entry.seq, "no audit key bound: MACs not checked")
            if key is not None and not hmac.compare_digest(
                AuditAuthenticator.entry_mac(key, entry.hash), entry.mac
            ):
                report("mac_invalid", entry.seq, "MAC does not verify (forged or re-chained)")
        if remember is not None and remember(entry.seq):
            hashes[entry.seq] = entry.hash
        prev = entry.hash
        expected = entry.seq + 1
        head = entry
    return ChainState(
        rows=rows,
        head_seq=None if head is None else head.seq,
        head_hash=None if head is None else head.hash,
        legacy_rows=legacy,
        hashes=hashes,
        problems=tuple(problems),
    )


def verify(session: Session) -> AuditReport:
    """Check the chain and every MAC (no checkpoint: see :mod:`worker.ledger.checkpoints`)."""
    state = walk(session)
    return AuditReport(
        ok=not state.problems,
        rows=state.rows,
        head_seq=state.head_seq,
        head_hash=state.head_hash,
        legacy_rows=state.legacy_rows,
        unchecked_rows=state.rows,
        problems=state.problems,
    )


def require_intact(session: Session) -> int:
    """Raise :class:`AuditChainBroken` unless the chain verifies; return the row count."""
    report = verify(session)
    if not report.ok:
        raise AuditChainBroken(f"audit chain broken at seq {report.first_bad_seq}: {report.reason}")
    return report.rows
