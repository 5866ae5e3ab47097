"""Reading releases from the ledger: a release's current figures, a release id from an id or a
name, the list of every release, and the ids of the published (not revoked) ones."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from worker.ledger.models import Release

from .context import ReleaseContext, ReleaseResult
from .errors import ReleaseError

__all__ = ["find", "list_releases", "published_ids", "result"]


def result(ctx: ReleaseContext, release_id: str) -> ReleaseResult:
    """The release's current figures."""
    row = ctx.load(release_id)
    summary = row.summary or {}
    shards = summary.get("shards")
    if shards is None:
        shards = len(summary.get("plan", {}).get("shards", []))
    return ReleaseResult(
        row.id,
        row.name,
        row.status,
        row.sample_count,
        row.k_achieved or 0,
        row.suppressed,
        int(shards),
        dict(summary.get("funnel") or {}),
    )


def find(ctx: ReleaseContext, ref: str) -> str:
    """A release id from an id or a name."""
    with ctx.db.session() as s:
        row = s.get(Release, ref) or s.scalars(select(Release).where(Release.name == ref)).first()
        if row is None:
            raise ReleaseError("not_found", "no such release")
        return row.id


def list_releases(ctx: ReleaseContext) -> list[dict[str, Any]]:
    """Every release, newest first."""
    with ctx.db.session() as s:
        return [
            {
                "release_id": r.id,
                "name": r.name,
                "status": r.status,
                "samples": r.sample_count,
                "k_achieved": r.k_achieved,
                "suppressed": r.suppressed,
                "created_at": r.created_at.isoformat(),
            }
            for r in s.scalars(select(Release).order_by(Release.created_at.desc()))
        ]


def published_ids(ctx: ReleaseContext) -> list[str]:
    """The ids of every published release that is not revoked."""
    with ctx.db.session() as s:
        return list(
            s.scalars(
                select(Release.id).where(
                    Release.status == "published", Release.revoked_at.is_(None)
                )
            )
        )
