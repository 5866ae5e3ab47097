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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from worker.ledger import audit
from worker.ledger.audit import AuditAuthenticator, AuditKeyMissing, AuditReport, Problem
from worker.ledger.db import Database
from worker.ledger.models import AuditCheckpoint, AuditEntry
from worker.storage.base import ObjectStore
from worker.storage.errors import ObjectMissing, StorageError


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


def _legacy_rows(s: Session, head_seq: int) -> int:
    """Rows before the first authenticated one (a prefix: scans only the legacy rows)."""
    first = s.scalars(
        select(AuditEntry.seq).where(AuditEntry.mac.is_not(None)).order_by(AuditEntry.seq).limit(1)
    ).first()
    return head_seq if first is None else first - 1


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

        One ledger transaction (it runs after every unit of work): the reads, the object put
        while it is open (a read-only snapshot so far: no lock is held), then the record of the
        checkpoint, committed only once the object is stored.
        """
        try:
            with self.db.session() as s:
                head = s.scalars(
                    select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1)
                ).first()
                if head is None:
                    return None
                latest = s.scalars(
                    select(AuditCheckpoint).order_by(AuditCheckpoint.seq.desc()).limit(1)
                ).first()
                if latest is not None and head.seq <= latest.seq:
                    return None
                key = self.auth.key(s, create=True)
                problem = self._check_since(s, latest, key, head.seq)
                if problem is not None:
                    log.error(
                        "audit.checkpoint_refused", error_code=problem.code, count=problem.seq
                    )
                    return None
                legacy = _legacy_rows(s, head.seq)
                checkpoint = Checkpoint.sign(key, head.seq, head.hash, legacy)
                name = self.keys.key(checkpoint.seq)
                self.store.put_retained(
                    name, checkpoint.to_bytes(), self.clock() + timedelta(days=RETAIN_DAYS)
                )
                s.add(
                    AuditCheckpoint(
                        seq=checkpoint.seq,
                        hash=checkpoint.hash,
                        key=name,
                        written_at=self.clock(),
                    )
                )
        except IntegrityError:  # another process recorded the same head first
            pass
        log.info("audit.checkpoint", count=checkpoint.seq)
        return checkpoint

    def _check_since(
        self, s: Session, latest: AuditCheckpoint | None, key: bytes, head_seq: int
    ) -> Problem | None:
        """The first problem in the rows after the previous checkpoint, if any."""
        start = 1 if latest is None else latest.seq
        prev = audit.GENESIS
        expected = start
        authenticated = False
        query = select(AuditEntry).where(AuditEntry.seq >= start).order_by(AuditEntry.seq)
        if head_seq - start > 2000:  # a long stretch: streamed (a server-side cursor)
            query = query.execution_options(yield_per=2000)
        rows = s.scalars(query)
        for entry in rows:
            if entry.seq != expected:
                return Problem("row_missing", expected, "rows missing since the last checkpoint")
            if latest is not None and entry.seq == latest.seq:
                if entry.hash != latest.hash:
                    return Problem("checkpoint_mismatch", entry.seq, "checkpointed row changed")
            elif entry.prev_hash != prev:
                return Problem("chain_broken", entry.seq, "previous-hash link broken")
            digest = audit.entry_digest(entry)
            if digest != entry.hash:
                return Problem("hash_mismatch", entry.seq, "row content does not match its hash")
            if entry.mac is None:
                if authenticated or latest is not None:
                    return Problem("mac_missing", entry.seq, "unauthenticated row")
            else:
                authenticated = True
                if not hmac.compare_digest(
                    AuditAuthenticator.entry_mac(key, entry.hash), entry.mac
                ):
                    return Problem("mac_invalid", entry.seq, "MAC does not verify")
            prev = entry.hash
            expected = entry.seq + 1
        if latest is not None and expected == start:
            return Problem("truncated", latest.seq, "the checkpointed head is gone")
        return None

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

    def _newest_valid(
        self, names: dict[int, str], key: bytes | None, problems: list[Problem]
    ) -> Checkpoint | None:
        """The newest checkpoint whose MAC verifies and whose name matches its content."""
        for n, seq in enumerate(sorted(names, reverse=True)):
            if n >= _MAX_SCAN:
                break
            try:
                with self.store.get(names[seq]) as fh:
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
                problems.append(
                    Problem("checkpoint_invalid", seq, "checkpoint MAC does not verify")
                )
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

    def verify(self) -> AuditReport:
        """Chain, MACs, and the newest checkpoint in the store against the ledger's rows."""
        problems: list[Problem] = []
        # The ledger's records first, the store's listing after: a checkpoint is recorded only
        # once its object is written, so a record read here is in the listing unless deleted.
        with self.db.session() as s:  # short: no store call while a ledger transaction is open
            try:
                key: bytes | None = self.auth.key(s)
            except AuditKeyMissing:
                key = None
            recorded = [
                (rec.seq, rec.key)
                for rec in s.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.seq))
            ]
        names: dict[int, str] = {}
        try:
            for name in self.store.keys(self.keys.prefix):
                found = self.keys.seq(name)
                if found is not None:
                    names[found] = name
            listed = True
        except StorageError as exc:
            listed = False
            problems.append(
                Problem("checkpoint_unavailable", None, f"cannot list checkpoints ({exc})")
            )
        if key is None and names:
            problems.append(Problem("key_missing", None, audit.PROBLEM_CODES["key_missing"]))
        try:
            newest = self._newest_valid(names, key, problems) if listed else None
        except StorageError as exc:
            newest = None
            problems.append(
                Problem("checkpoint_unavailable", None, f"cannot read checkpoints ({exc})")
            )
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
        with self.db.session() as s:
            cp_seq = None if newest is None else newest.seq
            state = audit.walk(s, remember=lambda q: q == cp_seq)
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
