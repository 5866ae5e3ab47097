"""Revocation reaching published releases: the signed revocation list of each release (its
sequence number taken under the release row's lock, so a higher number is always a later,
larger list), its refresh, and the purge of revoked subjects' samples from what a release
stores (shards rewritten as a new generation, the generation re-published, every earlier
generation's objects deleted through the deleter), one pass at a time per release; plus the
hook erasure and withdrawal call, and beat's retry of pending purges."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import select, update

from worker.ledger import audit
from worker.ledger.models import Release, Revocation, StoredObject
from worker.objects.deleter import Doomed
from worker.objects.errors import ObjectUnavailable
from worker.objects.layout import release_prefix, revocations_key, revocations_sig_key
from worker.retention.locks import LedgerLock

from . import reads, shards
from .context import ReleaseContext, ReleaseKeys, subject_pseudonym
from .format import REVOCATIONS_FORMAT
from .keys import canonical_json
from .publish import publish

__all__ = [
    "PURGE_LOCK_TTL",
    "on_revoked",
    "pending_purge",
    "purge",
    "purge_pending",
    "refresh",
    "sign",
    "write",
]

log = structlog.get_logger("facemedia.research.release")

PURGE_LOCK_TTL = timedelta(minutes=30)


# ----- signed lists ------------------------------------------------------------------------------


def _revoked_in(ctx: ReleaseContext, keys: ReleaseKeys, members: Iterable[str]) -> list[str]:
    """The release pseudonyms, among ``members``, of every subject on the revocation list."""
    present = set(members)
    with ctx.db.session() as s:
        subjects = list(s.scalars(select(Revocation.subject_id)))
    return sorted(
        p for p in (subject_pseudonym(keys.pseudonym, sid) for sid in subjects) if p in present
    )


def sign(ctx: ReleaseContext, release_id: str, members: Iterable[str]) -> tuple[list[str], int]:
    """Sign and store a new ``revocations.json`` with the next sequence number: the
    release pseudonyms, among ``members``, of every revoked subject. (revoked, sequence).

    The sequence number is taken by an UPDATE of the release row, which holds the row's
    lock (the database's write lock on SQLite) while the list is computed and stored: a
    higher number is always written later and lists a superset, so no re-signing ever
    puts an older list over a newer one."""
    json_key, sig_key = revocations_key(release_id), revocations_sig_key(release_id)
    for key in (json_key, sig_key):
        ctx.record(key, None)
    present = set(members)
    # keys unwrapped and the signing key loaded before the row lock is taken (loading
    # may read the ledger on its own connection)
    keys = ctx.keys(ctx.load(release_id))
    ctx.signing.public()
    with ctx.db.session() as s:
        s.execute(
            update(Release)
            .where(Release.id == release_id)
            .values(revocation_seq=Release.revocation_seq + 1)
        )
        seq = int(s.scalars(select(Release.revocation_seq).where(Release.id == release_id)).one())
        live = s.get(Release, release_id)
        assert live is not None
        subjects = list(s.scalars(select(Revocation.subject_id)))
        revoked = sorted(
            p for p in (subject_pseudonym(keys.pseudonym, sid) for sid in subjects) if p in present
        )
        doc = {
            "format": REVOCATIONS_FORMAT,
            "version": 2,
            "release_id": release_id,
            "sequence": seq,
            "generated_at": ctx.clock().isoformat(),
            "subjects": revoked,
        }
        body = canonical_json(doc)
        ctx.vault.put_raw(json_key, body)
        signature = ctx.signing.sign(body)
        ctx.vault.put_raw(sig_key, signature)
        summary = dict(live.summary or {})
        summary["revoked"] = revoked
        live.summary = summary
        audit.append(s, "release.revocations", release_id, revoked=len(revoked), sequence=seq)
    ctx.record(json_key, len(body))
    ctx.record(sig_key, len(signature))
    return revoked, seq


def write(ctx: ReleaseContext, release_id: str, *, force: bool = False) -> int | None:
    """Re-sign a published release's list if its revoked set changed (always with
    ``force``); the number revoked, or None if the release is not published (or revoked)."""
    row = ctx.load(release_id)
    if row.status != "published" or row.revoked_at is not None:
        return None
    summary = dict(row.summary or {})
    members = summary.get("subject_pseudonyms", [])
    revoked = _revoked_in(ctx, ctx.keys(row), members)
    if not force and revoked == summary.get("revoked", []):
        return len(revoked)
    got, _seq = sign(ctx, release_id, members)
    return len(got)


def refresh(ctx: ReleaseContext, refs: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Re-sign the revocation list of every published release (or those named) whose
    revoked set changed, and purge revoked samples still stored (inline). Run by
    ``research revocations refresh``; also the manual retry of a failed purge."""
    ids = [reads.find(ctx, r) for r in refs] if refs is not None else reads.published_ids(ctx)
    out = []
    for rid in ids:
        n = write(ctx, rid)
        if n is not None:
            got = purge(ctx, rid)
            out.append({"release_id": rid, "revoked": n, "purged_samples": got["removed"]})
    return out


def purge_pending(ctx: ReleaseContext) -> list[dict[str, Any]]:
    """Purge every published release whose signed list names samples still stored (a
    purge whose task was lost, or ran out of retries). Run by beat; cheap when nothing is
    pending: one read of each published release's summary."""
    out = []
    for rid in reads.published_ids(ctx):
        if pending_purge(ctx, rid):
            out.append(purge(ctx, rid))
    return out


def on_revoked(ctx: ReleaseContext, purge_later: Callable[[str], None] | None = None) -> None:
    """Re-sign the published revocation lists, then purge the revoked samples from the stored
    releases: inline (``purge_later`` None), or by ``purge_later(release_id)``. A failure is
    logged and left pending for the retries (never raised: an erasure never fails because of
    it)."""
    for rid in reads.published_ids(ctx):
        try:
            write(ctx, rid)
            if not pending_purge(ctx, rid):
                continue
            if purge_later is not None:
                purge_later(rid)
            else:
                purge(ctx, rid)
        except Exception as exc:  # retried later (see above); never fails an erasure
            log.error("release.purge_failed", release_id=rid, exc_type=type(exc).__name__)


# ----- purging revoked samples from the store ---------------------------------------------------


def _stale(ctx: ReleaseContext, release_id: str, current: Iterable[str]) -> list[Doomed]:
    """Live release objects of earlier generations (files and build state) that the
    current generation no longer names."""
    prefix = release_prefix(release_id)
    keep = set(current)
    with ctx.db.session() as s:
        rows = s.scalars(
            select(StoredObject).where(
                StoredObject.deleted_at.is_(None),
                StoredObject.key.like(prefix + "/files/%")
                | StoredObject.key.like(prefix + "/state/%"),
            )
        )
        return [Doomed.of(r) for r in rows if r.key not in keep]


def pending_purge(ctx: ReleaseContext, release_id: str) -> bool:
    """True while a revoked subject's samples, or an earlier generation's objects, may
    still be in the store."""
    row = ctx.load(release_id)
    if row.status != "published" or row.revoked_at is not None:
        return False
    summary = row.summary or {}
    if set(summary.get("revoked", [])) - set(summary.get("purged", [])):
        return True
    return bool(_stale(ctx, release_id, summary.get("objects", [])))


def purge(ctx: ReleaseContext, release_id: str) -> dict[str, Any]:
    """Remove every revoked subject's samples from what the release stores.

    The shards holding them are rebuilt without them as new objects (a new generation's
    keys); the manifest (their rows gone), datasheet (counts), privacy report (contact
    sheet) and sealed build state are regenerated, the index re-signed; then every object
    of earlier generations is deleted through the deleter (every version, receipts). The
    release data key is kept: no stored object it opens holds a revoked sample any more.
    Idempotent; a crash anywhere is finished by the next call. One pass at a time per
    release (a ledger lock); the holder repeats its pass for revocations that arrived
    meanwhile, so a caller locked out has nothing left to do."""
    lock = LedgerLock(ctx.db, f"release-purge:{release_id}", PURGE_LOCK_TTL, ctx.clock)
    if not lock.acquire():
        log.info("release.purge_locked_out", release_id=release_id)
        return {"release_id": release_id, "removed": 0, "deleted_objects": 0}
    try:
        total = {"release_id": release_id, "removed": 0, "deleted_objects": 0}
        for _ in range(5):
            got = _purge_once(ctx, release_id)
            total["removed"] += got["removed"]
            total["deleted_objects"] += got["deleted_objects"]
            row = ctx.load(release_id)
            summary = row.summary or {}
            if not set(summary.get("revoked", [])) - set(summary.get("purged", [])):
                break
            lock.renew()
        return total
    finally:
        lock.release()


def _purge_once(ctx: ReleaseContext, release_id: str) -> dict[str, Any]:
    row = ctx.load(release_id)
    result = {"release_id": release_id, "removed": 0, "deleted_objects": 0}
    if row.status != "published" or row.revoked_at is not None:
        return result
    summary = dict(row.summary or {})
    skey = summary.get("state_key")
    if skey is None:  # published before revocations reached the store
        log.warning("release.purge_unsupported", release_id=release_id)
        return result
    revoked = set(summary.get("revoked", []))
    if revoked - set(summary.get("purged", [])):
        keys = ctx.keys(row)
        cipher = ctx.cipher(release_id, keys)
        state = json.loads(cipher.open(skey, ctx.get(skey)))
        members: list[dict[str, Any]] = state["members"]
        gone = {m["sample"] for m in members if m["subject"] in revoked}
        if gone:
            generation = int(summary.get("generation", 0)) + 1
            affected = {m["shard"] for m in members if m["sample"] in gone}
            state["shards"] = [
                shards.rewrite(ctx, cipher, sh, gone, generation) if sh["name"] in affected else sh
                for sh in state["shards"]
            ]
            state["members"] = [m for m in members if m["sample"] not in gone]
            state["thumbnails"] = [t for t in state["thumbnails"] if t[0] not in gone]
            base = dict(state["base"])
            base["revoked_removed"] = int(base.get("revoked_removed", 0)) + len(gone)
            state["base"] = base
            pub = publish(ctx, row, keys, state, generation)
            public = pub.public
            summary |= {k2: v for k2, v in public.items() if k2 not in ("name", "release_id")}
            summary |= {
                "generation": generation,
                "state_key": pub.state_key,
                "objects": pub.objects,
                "manifest_sha256": pub.manifest_sha256,
            }
            result["removed"] = len(gone)
        summary["purged"] = sorted(revoked)
        with ctx.db.session() as s:
            live = s.get(Release, release_id)
            assert live is not None
            # the revoked set may have grown meanwhile: keep the newest list, mark only
            # what this pass removed
            fresh = dict(live.summary or {})
            fresh |= {k2: v for k2, v in summary.items() if k2 != "revoked"}
            live.summary = fresh
            if gone:
                live.sample_count = summary["samples"]
                live.k_achieved = summary["k_achieved"]
                live.manifest_sha256 = summary["manifest_sha256"]
                audit.append(
                    s,
                    "release.purged",
                    release_id,
                    removed=len(gone),
                    generation=summary["generation"],
                )
    stale = _stale(ctx, release_id, summary.get("objects", []))
    if stale:
        batch = ctx.deleter.delete(stale, "release_revocation")
        result["deleted_objects"] = batch.deleted
        if batch.unverified:
            raise ObjectUnavailable(
                "an earlier generation's release object is not verified deleted"
            )
    if result["removed"]:
        log.info("release.purged", release_id=release_id, count=result["removed"])
    return result
