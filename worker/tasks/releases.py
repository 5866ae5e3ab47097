"""Release tasks on the ``research`` queue: one shard of a release, and its finish.

Contract (JSON args): ``facemedia.research.build_shard`` [release_id, shard_index];
``facemedia.research.finish_release`` [release_id]; ``facemedia.research.purge_revoked`` []
(beat's retry of revocation purges). Release ids are the ledger's opaque ids.
A release of more than ``shard_samples`` samples is built by a group of shard tasks; the shard
that completes the set wins a compare-and-set in the ledger and sends the finish task (a chord
that needs no result backend). Both tasks are idempotent.
"""

from __future__ import annotations

from typing import Any

from worker.celery_app import app
from worker.dispatch import handlers
from worker.dispatch.names import BUILD_SHARD, FINISH, PURGE_PENDING
from worker.objects.errors import ObjectUnavailable

_RETRY: dict[str, Any] = {
    "autoretry_for": (ObjectUnavailable,),
    "retry_backoff": True,
    "retry_jitter": True,
    "max_retries": 5,
}


@app.task(name=BUILD_SHARD, ignore_result=True, acks_late=True, **_RETRY)
def build_shard(release_id: str, index: int) -> bool:
    """Build one shard; True when it completed the set and triggered the finish."""
    from worker.bootstrap import get_container

    return handlers.build_shard(get_container(), release_id, index)


@app.task(name=FINISH, ignore_result=True, acks_late=True, **_RETRY)
def finish_release(release_id: str) -> dict[str, Any]:
    """Manifest, documents, signed index; publish."""
    from worker.bootstrap import get_container

    return handlers.finish_release(get_container(), release_id)


@app.task(name=PURGE_PENDING, ignore_result=True, acks_late=True, **_RETRY)
def purge_revoked() -> list[dict[str, Any]]:
    """Beat's retry of revocation purges: remove revoked samples still stored in releases."""
    from worker.bootstrap import get_container

    return handlers.purge_revoked(get_container())
