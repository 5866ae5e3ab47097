"""Finishing a release, once: the part records read, classes that fell below k after the plan
suppressed (and their shards rebuilt), generation 0 published (:mod:`.publish`), the first
revocation list signed, the row marked ``published`` (audited), the part records dropped and
any sample revoked meanwhile purged. Idempotent; a failure other than a transient storage fault
marks the release ``failed`` (audited)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import structlog

from worker.ledger import audit
from worker.ledger.models import Release
from worker.objects.errors import ObjectUnavailable
from worker.research.funnel import release_funnel

from . import reads, revocations, shards
from .context import ReleaseContext, ReleaseResult
from .errors import ReleaseError
from .kanon import QUASI
from .publish import publish

__all__ = ["finish"]

log = structlog.get_logger("facemedia.research.release")


def finish(ctx: ReleaseContext, release_id: str) -> ReleaseResult:
    """Manifest, datasheet, privacy report, signed index; publish. Idempotent.

    A transient storage fault propagates (the task retries); any other failure marks the
    release ``failed`` (audited) and propagates."""
    try:
        return _finish(ctx, release_id)
    except ObjectUnavailable:
        raise
    except Exception as exc:
        with ctx.db.session() as s:
            live = s.get(Release, release_id)
            if live is not None and live.status != "published":
                live.status = "failed"
                code = exc.code if isinstance(exc, ReleaseError) else "internal_error"
                audit.append(s, "release.failed", release_id, error_code=code)
        log.error("release.failed", release_id=release_id, exc_type=type(exc).__name__)
        raise


def _finish(ctx: ReleaseContext, release_id: str) -> ReleaseResult:
    row = ctx.load(release_id)
    if row.status == "published":
        # A finish interrupted after publishing, or (the same task, sent by
        # ``on_revoked`` with a broker) revoked samples to purge from the store.
        shards.drop_parts(ctx, release_id)
        revocations.purge(ctx, release_id)
        return reads.result(ctx, release_id)
    summary = dict(row.summary or {})
    plan = summary["plan"]["shards"]
    keys = ctx.keys(row)
    cipher = ctx.cipher(release_id, keys)
    parts = shards.read_parts(ctx, release_id, cipher, len(plan))
    # Samples dropped after the plan (withdrawn meanwhile) may leave a class below k:
    # suppress such classes too and rebuild the shards that held them.
    k = row.k_requested
    for _ in range(3):
        members = [m for p in parts for m in p["members"] if m["kind"] == "media"]
        sizes = Counter(tuple(m[a] for a in QUASI) for m in members)
        small = {c for c, n in sizes.items() if n < k}
        if not small:
            break
        rids = {m["sample"] for m in members if tuple(m[a] for a in QUASI) in small}
        excluded = set(summary.get("excluded", []))
        affected = set()
        for i, shard in enumerate(plan):
            for e in shard:
                if e["rid"] in rids:
                    excluded.add(e["sample"])
                    affected.add(i)
        summary["excluded"] = sorted(excluded)
        with ctx.db.session() as s:
            live = s.get(Release, release_id)
            assert live is not None
            live.summary = dict(summary)
        for i in sorted(affected):
            shards.rebuild(ctx, release_id, i)
        parts = shards.read_parts(ctx, release_id, cipher, len(plan))
    dropped = sum(len(p["dropped"]) for p in parts)
    eligibility = summary.get("eligibility", {}) | {"dropped_after_plan": dropped}
    suppressed = row.suppressed + len(summary.get("excluded", []))
    state: dict[str, Any] = {
        "members": [m for p in parts for m in p["members"]],
        "shards": [p["shard"] | {"generation": 0} for p in parts],
        "thumbnails": [t for p in parts for t in p["thumbnails"] if isinstance(t, list)],
        "base": {
            "k_requested": k,
            "levels": summary.get("levels", {}),
            "eligibility": eligibility,
            "suppressed": suppressed,
            "funnel": release_funnel(
                (summary.get("funnel") or {}).get("sampling", {}), eligibility, suppressed, 0
            ),
        },
    }
    pub = publish(ctx, row, keys, state, 0)
    # The revocation list exists before the release is published (a pull right after
    # publication finds it); a withdrawal in between is caught by the refresh below and
    # its samples purged from the stored objects by :func:`.revocations.purge`.
    revoked, _seq = revocations.sign(ctx, release_id, pub.subjects)
    t = ctx.clock()
    public = pub.public
    final = {k2: v for k2, v in public.items() if k2 not in ("name", "release_id")}
    final |= {
        "subject_pseudonyms": pub.subjects,
        "revoked": revoked,
        "purged": [],
        "generation": 0,
        "state_key": pub.state_key,
        "objects": pub.objects,
    }
    with ctx.db.session() as s:
        live = s.get(Release, release_id)
        assert live is not None
        live.summary = final
        live.status = "published"
        live.published_at = t
        live.manifest_sha256 = pub.manifest_sha256
        live.sample_count = public["samples"]
        live.k_achieved = public["k_achieved"]
        live.suppressed = public["suppressed"]
        audit.append(
            s,
            "release.published",
            release_id,
            samples=public["samples"],
            k_achieved=public["k_achieved"],
            suppressed=public["suppressed"],
            manifest_sha256=pub.manifest_sha256,
        )
    revocations.write(ctx, release_id)
    shards.drop_parts(ctx, release_id)
    log.info("release.published", release_id=release_id, count=public["samples"])
    revocations.purge(ctx, release_id)
    return reads.result(ctx, release_id)
