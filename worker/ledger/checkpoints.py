"""Signed checkpoints of the audit log, kept outside the ledger (like a CT signed tree head).

A checkpoint is a small JSON object ``{seq, hash, legacy_rows, written_at, mac}`` naming the
head of the audit chain, MAC'd with HMAC-SHA256 under the audit key (domain-separated from entry
MACs), written to the object store at ``checkpoints/audit-<seq, 12 digits>.json`` whenever a
unit of work (a CLI command, a Celery task, an inline run) that appended entries ends. On S3
with Object Lock the object is written with a retention date (never deleted); every store exempts
the prefix from the orphan sweep. The ledger also records each checkpoint it wrote
(``audit_checkpoints``), so either side's loss is seen from the other:

- a ledger writer who deletes the newest rows (or every row) leaves a checkpoint naming a head
  the ledger no longer has (``truncated``), and one who re-chains rows cannot compute their MACs
  (``mac_invalid``) nor the hash a checkpoint names (``checkpoint_mismatch``);
- a store writer who deletes checkpoint objects leaves the ledger's record of them
  (``checkpoint_missing``); one who puts an older checkpoint in place of a newer one leaves an
  object whose signed sequence number is not the one in its name (``checkpoint_rolled_back``).

Someone who controls both the ledger and a store without a retention lock can cut both back
consistently to an earlier checkpoint; Object Lock (or a copy of the newest checkpoint kept
elsewhere) is what stops that. See docs/PRIVACY.md.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from worker.ledger import audit
from worker.ledger.audit import AuditAuthenticator, AuditKeyMissing, AuditReport, Problem
from worker.storage.errors import ObjectMissing, StorageError

if TYPE_CHECKING:  # SQLAlchemy and the models: imported by the writer only (verify reads over
    # DB-API, so ``facemedia audit verify`` starts without them)

    from worker.ledger.db import Database, QuickReader
    from worker.storage.base import ObjectStore


class _LazyLog:
    """The ``facemedia.audit`` structlog logger, imported on first use (``audit verify`` logs
    nothing and so skips structlog's ~50 ms import)."""

    def __getattr__(self, name: str) -> Any:
        import structlog

        return getattr(structlog.get_logger("facemedia.audit"), name)


log = _LazyLog()

#: Object Lock retention of a checkpoint where the bucket has Object Lock (ten years).
RETAIN_DAYS = 3650
_MAX_SCAN = 100  # invalid newest checkpoints examined before giving up on finding a valid one
_SINCE_BATCH = 2000  # rows since the last checkpoint read at once by the writer (else streamed)
# The writer's one read: the newest recorded checkpoint, the first authenticated row (the legacy
# prefix's end) and up to :n rows from the checkpointed one on; always at least one row (the
# audit_log columns NULL when there are none), in sequence order.
_SINCE_SQL = """
WITH latest AS (SELECT seq, hash FROM audit_checkpoints ORDER BY seq DESC LIMIT 1)
SELECT l.seq, l.hash,
       (SELECT seq FROM audit_log WHERE mac IS NOT NULL ORDER BY seq LIMIT 1),
       a.seq, a.tenant, a.ts, a.event, a.entity, a.details, a.prev_hash, a.hash, a.mac
FROM (SELECT 1 AS one) AS o
LEFT JOIN latest AS l ON 1 = 1
LEFT JOIN audit_log AS a ON a.seq >= COALESCE(l.seq, 1)
ORDER BY a.seq
LIMIT :n
"""


class CheckpointKeys(Protocol):
    """Where checkpoints live in the store: the objects layer's key layout
    (``worker.objects.layout.CHECKPOINTS``), handed in so the ledger never imports it."""

    @property
    def prefix(self) -> str:
        """The key prefix every checkpoint is under (the store's reserved one)."""
        ...

    def key(self, seq: int) -> str:
        """The key of the checkpoint of head ``seq``."""
        ...

    def seq(self, key: str) -> int | None:
        """The head a checkpoint key names, or None for any other key."""
        ...


def _body(seq: int, digest: str, legacy_rows: int, written_at: str) -> bytes:
    return json.dumps(
        {
            "kind": "facemedia-audit-checkpoint",
            "v": 1,
            "seq": seq,
            "hash": digest,
            "legacy_rows": legacy_rows,
            "written_at": written_at,
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()


@dataclass(frozen=True)
class Checkpoint:
    """A signed head of the audit chain."""

    seq: int
    hash: str
    legacy_rows: int
    written_at: str
    mac: str

    @classmethod
    def sign(cls, key: bytes, seq: int, digest: str, legacy_rows: int) -> Checkpoint:
        """A checkpoint of head ``seq``/``digest`` MAC'd under the audit key."""
        written_at = datetime.now(UTC).isoformat()
        mac = AuditAuthenticator.checkpoint_mac(key, _body(seq, digest, legacy_rows, written_at))
        return cls(seq, digest, legacy_rows, written_at, mac)

    def to_bytes(self) -> bytes:
        """The stored object."""
        data = json.loads(_body(self.seq, self.hash, self.legacy_rows, self.written_at))
        data["mac"] = self.mac
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def parse(cls, data: bytes) -> Checkpoint:
        """Parse a stored object; ``ValueError`` if it is not a checkpoint."""
        try:
            obj = json.loads(data)
            if obj.get("kind") != "facemedia-audit-checkpoint" or obj.get("v") != 1:
                raise ValueError("not a checkpoint")
            return cls(
                int(obj["seq"]),
                str(obj["hash"]),
                int(obj["legacy_rows"]),
                str(obj["written_at"]),
                str(obj["mac"]),
            )
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError("not a checkpoint") from exc

    def verifies(self, key: bytes) -> bool:
        """True if the MAC verifies under the audit key."""
        body = _body(self.seq, self.hash, self.legacy_rows, self.written_at)
        return hmac.compare_digest(AuditAuthenticator.checkpoint_mac(key, body), self.mac)


class Checkpointer:
    """Writes checkpoints at the end of a unit of work and verifies the log against them."""

    def __init__(
        self,
        db: Database,
        store: ObjectStore,
        authenticator: AuditAuthenticator,
        keys: CheckpointKeys,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.store = store
        self.auth = authenticator
        self.keys = keys
        self.clock = clock

    # ----- writing ---------------------------------------------------------------------------

    def write(self) -> Checkpoint | None:
        """Checkpoint the current head if no checkpoint covers it yet.

        The rows since the previous recorded checkpoint are verified first (links, hashes,
        MACs, the previous head's hash): the service never signs a head it cannot vouch for.
        Returns None when there is nothing new or the head was refused (logged).

        One ledger transaction (it runs after every unit of work), two statements: one read
        of the previous checkpoint, the rows since it (the newest is the head signed) and the
        legacy prefix's length; the object put while the transaction is open (a read-only
        snapshot so far: no lock is held), then the record of the checkpoint, committed only
        once the object is stored. The audit key is the one read within the last
        ``AUDIT_KEY_RECHECK_S`` seconds (:meth:`AuditAuthenticator.recent_key`), else read too.
        A stretch longer than ``_SINCE_BATCH`` rows (a first checkpoint over a long log) is read
        again, streamed.
        """
        from sqlalchemy import insert, select, text
        from sqlalchemy.exc import IntegrityError

        from worker.ledger.models import AuditCheckpoint, AuditEntry

        checkpoint: Checkpoint | None = None
        try:
            with self.db.session() as s:
                found = s.execute(text(_SINCE_SQL), {"n": _SINCE_BATCH + 1}).all()
                cp_seq, cp_hash, first_mac = found[0][:3]
                latest = None if cp_seq is None else (int(cp_seq), str(cp_hash))
                rows = [audit.AuditRow(*r[3:]) for r in found if r[3] is not None]
                if not rows or (latest is not None and rows[-1].seq <= latest[0]):
                    return None  # nothing since the last checkpoint (or an empty log)
                # the key as read within the last 30 s (no service_keys round trip per unit of
                # work); created here when its row is missing
                recent = self.auth.recent_key(s)
                key = recent if recent is not None else self.auth.key(s, create=True)
                if len(rows) > _SINCE_BATCH:  # a long stretch: streamed (server-side cursor)
                    query = (
                        select(*(getattr(AuditEntry, f) for f in audit.AuditRow._fields))
                        .where(AuditEntry.seq >= rows[0].seq)
                        .order_by(AuditEntry.seq)
                        .execution_options(yield_per=2000)
                    )
                    rows = (audit.AuditRow(*r) for r in s.execute(query))  # type: ignore[assignment]
                problem, head = self._check_since(rows, latest, key)
                if problem is not None or head is None:
                    if problem is not None:
                        log.error(
                            "audit.checkpoint_refused", error_code=problem.code, count=problem.seq
                        )
                    return None
                legacy = head.seq if first_mac is None else int(first_mac) - 1
                checkpoint = Checkpoint.sign(key, head.seq, head.hash, legacy)
                name = self.keys.key(checkpoint.seq)
                self.store.put_retained(
                    name, checkpoint.to_bytes(), self.clock() + timedelta(days=RETAIN_DAYS)
                )
                s.execute(
                    insert(AuditCheckpoint.__table__).values(  # type: ignore[arg-type]
                        seq=checkpoint.seq,
                        hash=checkpoint.hash,
                        key=name,
                        written_at=self.clock(),
                    )
                )
        except IntegrityError:  # another process recorded the same head first
            if checkpoint is None:
                return None
        assert checkpoint is not None
        log.info("audit.checkpoint", count=checkpoint.seq)
        return checkpoint

    def _check_since(
        self, rows: Iterable[audit.AuditRow], latest: tuple[int, str] | None, key: bytes
    ) -> tuple[Problem | None, audit.AuditRow | None]:
        """The first problem in ``rows`` (every row from the previous checkpoint ``latest``,
        ``(seq, hash)``, on, in sequence order), if any, and the newest row (the head)."""
        start = 1 if latest is None else latest[0]
        prev = audit.GENESIS
        expected = start
        authenticated = False
        head: audit.AuditRow | None = None
        for entry in rows:
            if entry.seq != expected:
                return Problem(
                    "row_missing", expected, "rows missing since the last checkpoint"
                ), None
            if latest is not None and entry.seq == latest[0]:
                if entry.hash != latest[1]:
                    return Problem(
                        "checkpoint_mismatch", entry.seq, "checkpointed row changed"
                    ), None
            elif entry.prev_hash != prev:
                return Problem("chain_broken", entry.seq, "previous-hash link broken"), None
            digest = audit.entry_digest(entry)
            if digest != entry.hash:
                return Problem(
                    "hash_mismatch", entry.seq, "row content does not match its hash"
                ), None
            if entry.mac is None:
                if authenticated or latest is not None:
                    return Problem("mac_missing", entry.seq, "unauthenticated row"), None
            else:
                authenticated = True
                if not hmac.compare_digest(
                    AuditAuthenticator.entry_mac(key, entry.hash), entry.mac
                ):
                    return Problem("mac_invalid", entry.seq, "MAC does not verify"), None
            prev = entry.hash
            expected = entry.seq + 1
            head = entry
        if latest is not None and expected == start:
            return Problem("truncated", latest[0], "the checkpointed head is gone"), None
        return None, head

    def write_quietly(self) -> Checkpoint | None:
        """:meth:`write`, logging (not raising) a failure; the next unit of work retries."""
        audit.take_appended(self.db.engine)
        try:
            return self.write()
        except Exception as exc:  # a store outage must not fail the work that already committed
            audit.mark_appended(self.db.engine)
            log.warning("audit.checkpoint_failed", exc_type=type(exc).__name__)
            return None

    # ----- verifying -------------------------------------------------------------------------

    def verify(self) -> AuditReport:
        """Chain, MACs, and the newest checkpoint in the store against the ledger's rows
        (:func:`verify_log` on connections of this ledger's pool)."""
        return verify_log(self.db.reader, self.store, self.auth, self.keys)


_CHECKPOINTS_SQL = "SELECT seq, key FROM audit_checkpoints ORDER BY seq"


def _newest_valid(
    store: ObjectStore, names: dict[int, str], key: bytes | None, problems: list[Problem]
) -> Checkpoint | None:
    """The newest checkpoint whose MAC verifies and whose name matches its content."""
    for n, seq in enumerate(sorted(names, reverse=True)):
        if n >= _MAX_SCAN:
            break
        try:
            with store.get(names[seq]) as fh:
                checkpoint = Checkpoint.parse(fh.read())
        except ObjectMissing:  # listed but no current version: a delete marker over it
            problems.append(Problem("checkpoint_missing", seq, "checkpoint object deleted"))
            continue
        except ValueError:
            problems.append(Problem("checkpoint_invalid", seq, "not a checkpoint object"))
            continue
        if key is None:
            return None
        if not checkpoint.verifies(key):
            problems.append(Problem("checkpoint_invalid", seq, "checkpoint MAC does not verify"))
            continue
        if checkpoint.seq != seq:
            problems.append(
                Problem(
                    "checkpoint_rolled_back",
                    seq,
                    f"the checkpoint named {seq} holds the older head {checkpoint.seq}",
                )
            )
            continue
        return checkpoint
    return None


def verify_log(
    open_reader: Callable[[], QuickReader],
    store: ObjectStore,
    auth: AuditAuthenticator,
    keys: CheckpointKeys,
) -> AuditReport:
    """Chain, MACs, and the newest checkpoint in the store against the ledger's rows.

    The ledger is read over DB-API (:class:`~worker.ledger.db.QuickReader`, from
    ``open_reader``: the pool's connection in a service, a bare driver connection in
    ``facemedia audit verify``, which so starts without SQLAlchemy), in two short reads: the
    key and the recorded checkpoints, then, after the store's listing, the rows.
    """
    problems: list[Problem] = []
    # The ledger's records first, the store's listing after: a checkpoint is recorded only
    # once its object is written, so a record read here is in the listing unless deleted.
    with open_reader() as reader:  # short: no store call while a ledger read is open
        try:
            key: bytes | None = auth.read_key(reader)
        except AuditKeyMissing:
            key = None
        recorded = [(int(r["seq"]), str(r["key"])) for r in reader.rows(_CHECKPOINTS_SQL)]
    names: dict[int, str] = {}
    try:
        for name in store.keys(keys.prefix):
            found = keys.seq(name)
            if found is not None:
                names[found] = name
        listed = True
    except StorageError as exc:
        listed = False
        problems.append(Problem("checkpoint_unavailable", None, f"cannot list checkpoints ({exc})"))
    if key is None and names:
        problems.append(Problem("key_missing", None, audit.PROBLEM_CODES["key_missing"]))
    try:
        newest = _newest_valid(store, names, key, problems) if listed else None
    except StorageError as exc:
        newest = None
        problems.append(Problem("checkpoint_unavailable", None, f"cannot read checkpoints ({exc})"))
    if listed:
        present = set(names.values())
        for seq, name in recorded:
            if name not in present:
                problems.append(
                    Problem(
                        "checkpoint_missing",
                        seq,
                        f"the checkpoint of head {seq} is gone from the store",
                    )
                )
    cp_seq = None if newest is None else newest.seq
    with open_reader() as reader:
        state = audit.walk_rows(reader, auth, remember=lambda q: q == cp_seq)
    problems.extend(state.problems)
    if newest is not None:
        head = state.head_seq or 0
        if head < newest.seq:
            problems.append(
                Problem(
                    "truncated",
                    head + 1,
                    f"rows {head + 1}..{newest.seq} are missing after the checkpointed head",
                )
            )
        elif newest.seq in state.hashes and state.hashes[newest.seq] != newest.hash:
            problems.append(
                Problem(
                    "checkpoint_mismatch",
                    newest.seq,
                    "the row at the checkpoint has another hash (history rewritten)",
                )
            )
        if state.legacy_rows > newest.legacy_rows:
            problems.append(
                Problem(
                    "mac_missing",
                    newest.legacy_rows + 1,
                    "rows authenticated at the checkpoint have lost their MAC",
                )
            )
    problems.sort(key=lambda p: (p.seq is None, p.seq or 0))
    return AuditReport(
        ok=not problems,
        rows=state.rows,
        head_seq=state.head_seq,
        head_hash=state.head_hash,
        checkpoint_seq=cp_seq,
        legacy_rows=state.legacy_rows,
        unchecked_rows=state.rows if cp_seq is None else max(0, (state.head_seq or 0) - cp_seq),
        problems=tuple(problems),
    )


def describe(report: AuditReport) -> dict[str, Any]:
    """The CLI's JSON view (the report's, with the problem-code glossary for codes present)."""
    data = dict(report.to_json())
    data["codes"] = {p.code: audit.PROBLEM_CODES.get(p.code, "") for p in report.problems}
    return data
