"""Who can open a release: grants of its data key to researchers' X25519 keys (stored and
recorded, audited), the withdrawal of a whole release (every object deleted through the
deleter, audited), and the re-wrapping of every live release's keys and of the signing key
under the keyring's current KEK."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from worker.ids import new_id
from worker.ledger import audit
from worker.ledger.models import Release, ReleaseGrant
from worker.objects.layout import grant_key, release_prefix

from . import reads
from .context import ReleaseContext
from .errors import ReleaseError
from .keys import load_public_key, release_key_context, seal_grant

__all__ = ["grant", "revoke", "rewrap"]


def grant(ctx: ReleaseContext, ref: str, public_key: bytes) -> dict[str, Any]:
    """Wrap the release data key to a researcher's X25519 public key; audited."""
    release_id = reads.find(ctx, ref)
    pub = load_public_key(public_key)
    row = ctx.load(release_id)
    if row.revoked_at is not None:
        raise ReleaseError("not_published", "the release was revoked")
    keys = ctx.keys(row)
    doc = seal_grant(release_id, keys.data, pub)
    fp = doc["fingerprint"]
    ctx.put(grant_key(release_id, fp), json.dumps(doc, sort_keys=True, indent=1).encode())
    with ctx.db.session() as s:
        exists = s.scalars(
            select(ReleaseGrant).where(
                ReleaseGrant.release_id == release_id, ReleaseGrant.fingerprint == fp
            )
        ).first()
        if exists is None:
            s.add(
                ReleaseGrant(
                    id=new_id(), release_id=release_id, fingerprint=fp, created_at=ctx.clock()
                )
            )
        audit.append(s, "release.granted", release_id, fingerprint=fp)
    return {"release_id": release_id, "fingerprint": fp, "new": exists is None}


def revoke(ctx: ReleaseContext, ref: str) -> dict[str, Any]:
    """Withdraw a whole release: every object under its prefix deleted through the deleter
    (every version, receipts), status ``revoked``; audited. Copies already pulled are the
    holders' to delete (the datasheet says so)."""
    release_id = reads.find(ctx, ref)
    deleted = ctx.delete_prefix(release_prefix(release_id) + "/", "release_revoked")
    with ctx.db.session() as s:
        live = s.get(Release, release_id)
        assert live is not None
        already = live.revoked_at is not None
        live.revoked_at = live.revoked_at or ctx.clock()
        live.status = "revoked"
        audit.append(s, "release.revoked", release_id, deleted=deleted)
    return {"release_id": release_id, "deleted": deleted, "already_revoked": already}


def rewrap(ctx: ReleaseContext) -> int:
    """Re-wrap every live release's data and pseudonym keys, and the signing key, under the
    keyring's current KEK (run after ``facemedia keys rotate``, before retiring the old
    KEK version); returns the number of releases re-wrapped."""
    with ctx.db.session() as s:
        ids = list(s.scalars(select(Release.id).where(Release.revoked_at.is_(None))))
    count = 0
    for release_id in ids:
        row = ctx.load(release_id)
        keys = ctx.keys(row)
        data = ctx.keyring.wrap(keys.data.raw(), release_key_context(release_id, "data"))
        pseud = ctx.keyring.wrap(keys.pseudonym.raw(), release_key_context(release_id, "pseudonym"))
        with ctx.db.session() as s:
            live = s.get(Release, release_id)
            assert live is not None
            live.keyring_id = data.kek.keyring_id
            live.kek_version = data.kek.version
            live.wrapped_data_key = data.blob
            live.wrapped_pseudonym_key = pseud.blob
        count += 1
    ctx.signing.rewrap()
    with ctx.db.session() as s:
        audit.append(s, "release.keys_rewrapped", None, count=count)
    return count
