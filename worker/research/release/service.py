"""The release service's façade: building, granting and revoking releases (the researcher's
side is :mod:`.pull`).

A release is planned in one transaction (:mod:`.plan`: eligibility, k-anonymity, keys, the
shard plan), built shard by shard (:mod:`.shards`; inline, or as a Celery group of
``facemedia.research.build_shard`` tasks), and finished once (:mod:`.finish`, task
``facemedia.research.finish_release``): manifest, datasheet, privacy report, signed index
(:mod:`.publish`), initial revocation list (:mod:`.revocations`). The shard that completes the
set wins a compare-and-set on the release's status and triggers the finish, so no result
backend is needed for the chord. Grants, whole-release revocation and key re-wrapping are
:mod:`.grants`; reads are :mod:`.reads`; the stored layout is :mod:`.format`.

This module owns only the wiring: the constructor's dependencies and the callbacks that hand
work to the queue (``fan_out``, ``finish_later``, ``purge_later``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from worker.crypto.keyring import Keyring
from worker.ledger.db import Database
from worker.ledger.models import Release
from worker.objects.deleter import Deleter
from worker.objects.records import ObjectRecords

from . import finish as _finish
from . import grants, reads, revocations, shards
from . import plan as _plan
from .context import (
    ReleaseConfig,
    ReleaseContext,
    ReleaseKeys,
    ReleaseRequest,
    ReleaseResult,
    sample_pseudonym,
    subject_pseudonym,
    utcnow,
)
from .signing import SigningKeys

__all__ = ["ReleaseConfig", "ReleaseRequest", "ReleaseResult", "ReleaseService"]


class ReleaseService:
    """Plans, builds, finishes, grants and revokes releases (each part in its own module)."""

    def __init__(
        self,
        db: Database,
        records: ObjectRecords,
        keyring: Keyring,
        signing: SigningKeys,
        deleter: Deleter,
        config: ReleaseConfig,
        *,
        fan_out: Callable[[str, int], None] | None = None,
        finish_later: Callable[[str], None] | None = None,
        purge_later: Callable[[str], None] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.ctx = ReleaseContext(db, records, keyring, signing, deleter, config, clock)
        self.fan_out = fan_out
        self.finish_later = finish_later
        # With a broker: send the purge of revoked samples as a task (``on_revoked`` then
        # returns after re-signing the lists); None: purge inline.
        self.purge_later = purge_later

    @property
    def signing(self) -> SigningKeys:
        """The service's signing key (index and revocation lists)."""
        return self.ctx.signing

    subject_pseudonym = staticmethod(subject_pseudonym)
    sample_pseudonym = staticmethod(sample_pseudonym)

    # kept for tests/research/test_release.py (``pseudonym_key``), which reads a release's
    # pseudonym key through the service
    def _load(self, release_id: str) -> Release:
        return self.ctx.load(release_id)

    def _keys(self, row: Release) -> ReleaseKeys:
        return self.ctx.keys(row)

    # ----- building --------------------------------------------------------------------------

    def create(self, request: ReleaseRequest) -> ReleaseResult:
        """Plan the release and build it (inline, or fanned out when it has several shards)."""
        release_id, count = _plan.plan(self.ctx, request)
        if count > 1 and self.fan_out is not None:
            self.fan_out(release_id, count)
        else:
            for i in range(count):
                self.build_shard(release_id, i, trigger_finish=False)
            self.finish(release_id)
        return self.result(release_id)

    def build_shard(self, release_id: str, index: int, *, trigger_finish: bool = True) -> bool:
        """Write shard ``index`` and its part record; True if this call completed the set and
        triggered the finish.

        The task form (``trigger_finish``) runs only while the release is ``building`` and does
        not rewrite a shard whose part record exists (a redelivered task only re-checks
        completion), so nothing is rewritten under a finish that has read it. The finish itself
        rebuilds shards with ``trigger_finish=False``."""
        if not trigger_finish:
            shards.rebuild(self.ctx, release_id, index)
            return False
        if not shards.build(self.ctx, release_id, index):
            return False
        if self.finish_later is not None:
            self.finish_later(release_id)
        else:
            self.finish(release_id)
        return True

    def finish(self, release_id: str) -> ReleaseResult:
        """Manifest, datasheet, privacy report, signed index; publish. Idempotent (see
        :func:`.finish.finish`)."""
        return _finish.finish(self.ctx, release_id)

    # ----- reads -----------------------------------------------------------------------------

    def result(self, release_id: str) -> ReleaseResult:
        """The release's current figures."""
        return reads.result(self.ctx, release_id)

    def find(self, ref: str) -> str:
        """A release id from an id or a name."""
        return reads.find(self.ctx, ref)

    def list_releases(self) -> list[dict[str, Any]]:
        """Every release, newest first."""
        return reads.list_releases(self.ctx)

    # ----- access ----------------------------------------------------------------------------

    def grant(self, ref: str, public_key: bytes) -> dict[str, Any]:
        """Wrap the release data key to a researcher's X25519 public key; audited."""
        return grants.grant(self.ctx, ref, public_key)

    def revoke(self, ref: str) -> dict[str, Any]:
        """Withdraw a whole release (see :func:`.grants.revoke`)."""
        return grants.revoke(self.ctx, ref)

    def rewrap(self) -> int:
        """Re-wrap every live release's keys and the signing key under the current KEK; the
        number of releases re-wrapped (see :func:`.grants.rewrap`)."""
        return grants.rewrap(self.ctx)

    # ----- revocations -----------------------------------------------------------------------

    def _write_revocations(self, release_id: str, *, force: bool = False) -> int | None:
        """Re-sign one release's list if it changed (see :func:`.revocations.write`)."""
        return revocations.write(self.ctx, release_id, force=force)

    def refresh_revocations(self, refs: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Re-sign changed revocation lists and purge (see :func:`.revocations.refresh`)."""
        return revocations.refresh(self.ctx, refs)

    def purge_pending(self) -> list[dict[str, Any]]:
        """Beat's retry of pending purges (see :func:`.revocations.purge_pending`)."""
        return revocations.purge_pending(self.ctx)

    def pending_purge(self, release_id: str) -> bool:
        """True while revoked samples or an earlier generation's objects may still be stored."""
        return revocations.pending_purge(self.ctx, release_id)

    def purge(self, release_id: str) -> dict[str, Any]:
        """Remove every revoked subject's samples from what the release stores (see
        :func:`.revocations.purge`)."""
        return revocations.purge(self.ctx, release_id)

    def on_revoked(self, subject_id: str) -> None:
        """Hook for :class:`SubjectRights` (consent withdrawn or subject erased): re-sign the
        published revocation lists, then purge the revoked samples from the stored releases:
        inline (embedded), or as the release's finish task on the ``research`` queue (with a
        broker; retried with backoff, and again by every later revocation and by ``research
        revocations refresh``). An inline purge that fails is logged and left pending for
        those retries: the erasure itself never fails because of it."""
        del subject_id  # the lists are recomputed from the ledger's revocations
        revocations.on_revoked(self.ctx, self.purge_later)
