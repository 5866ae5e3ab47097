"""Planning a release, in one transaction: the request checked, the release's data and
pseudonym keys made and wrapped, the eligible samples chosen (consent, guardian consent,
withdrawal, erasure, revocation, deletion, gate and operator filter), k-anonymity reached by
generalization and suppression, each sample given its release pseudonym, and the shard plan
recorded on the ``building`` release row (audited). Building the shards is :mod:`.shards`.

Releases are the operator's and span every tenant's samples unless the request names one tenant
(``research release --tenant``). The tenant is used only to choose samples: it is not recorded on
the release row or in its summary (from which the datasheet and the report are written), nor in
any file of the release; the audit entry of the release notes the restriction."""

from __future__ import annotations

import os
import re
from collections import Counter
from typing import Any

import structlog
from sqlalchemy import select

from worker.crypto.secret import SecretKey
from worker.ids import new_id
from worker.ledger import audit
from worker.ledger.models import Release, ResearchSample, Revocation, StoredObject, Subject
from worker.ledger.tenants import BadTenant, check_tenant
from worker.research.funnel import release_funnel, sampling_totals

from .context import ReleaseContext, ReleaseRequest, sample_pseudonym
from .errors import ReleaseError
from .kanon import anonymize
from .keys import release_key_context

__all__ = ["plan"]

log = structlog.get_logger("facemedia.research.release")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _eligible(
    s: Any, operator: str | None, tenant: str | None = None
) -> tuple[list[tuple[ResearchSample, Subject]], dict[str, int]]:
    revoked = set(s.scalars(select(Revocation.subject_id)))
    query = (
        select(ResearchSample, Subject, StoredObject)
        .join(Subject, Subject.id == ResearchSample.subject_id)
        .join(StoredObject, StoredObject.id == ResearchSample.object_id)
    )
    if operator is not None:
        query = query.where(ResearchSample.operator == operator)
    if tenant is not None:
        query = query.where(Subject.tenant == tenant)
    counts: Counter[str] = Counter()
    keep: list[tuple[ResearchSample, Subject]] = []
    for sample, subject, obj in s.execute(query):
        counts["considered"] += 1
        if subject.erased_at is not None or subject.erase_requested_at is not None:
            counts["excluded_erased"] += 1
        elif subject.id in revoked or subject.consent_withdrawn_at is not None:
            counts["excluded_withdrawn"] += 1
        elif not subject.research_consent:
            counts["excluded_no_consent"] += 1
        elif subject.is_minor and not subject.guardian_consent:
            counts["excluded_minor"] += 1
        elif obj.deleted_at is not None or obj.object_class != "research":
            counts["excluded_deleted"] += 1
        elif sample.gate is not None and sample.gate.get("passed") is False:
            counts["excluded_gate"] += 1
        else:
            keep.append((sample, subject))
    return keep, dict(counts)


def plan(ctx: ReleaseContext, request: ReleaseRequest) -> tuple[str, int]:
    """Check the request and record the planned release; (release id, number of shards)."""
    if not _NAME_RE.match(request.name):
        raise ReleaseError(
            "bad_request", "a release name is 1-64 of letters, digits, '.', '_' and '-'"
        )
    k = request.k if request.k is not None else ctx.config.default_k
    if k < 1:
        raise ReleaseError("bad_request", "k must be at least 1")
    if not 0.0 <= request.max_suppression <= 1.0:
        raise ReleaseError("bad_request", "max_suppression is a share from 0 to 1")
    if request.tenant is not None:
        try:
            check_tenant(request.tenant)
        except BadTenant as exc:
            raise ReleaseError("bad_request", str(exc)) from None
    release_id = new_id()
    data_key, pseud_key = os.urandom(32), os.urandom(32)
    wrapped_data = ctx.keyring.wrap(data_key, release_key_context(release_id, "data"))
    wrapped_pseud = ctx.keyring.wrap(pseud_key, release_key_context(release_id, "pseudonym"))
    if wrapped_data.kek != wrapped_pseud.kek:  # a rotation between the two wraps
        wrapped_data = ctx.keyring.wrap(data_key, release_key_context(release_id, "data"))
    pkey = SecretKey(pseud_key)
    sampling = sampling_totals(ctx.db, request.tenant)  # a restricted release: its tenant only
    t = ctx.clock()
    with ctx.db.session() as s:
        if s.scalars(select(Release.id).where(Release.name == request.name)).first():
            raise ReleaseError("exists", "a release with this name already exists")
        pairs, counts = _eligible(s, request.operator, request.tenant)
        if not pairs:
            raise ReleaseError(
                "no_eligible_samples",
                "no eligible research samples: see the funnel for where the candidate jobs "
                "went (research.sample_rate, consent, guardian consent, withdrawal, erasure, "
                "the residual-face gate, the operator filter)",
                details={"funnel": release_funnel(sampling, counts, 0, 0)},
            )
        anon = anonymize([p[0].quasi or {} for p in pairs], k, request.max_suppression)
        if not anon.kept:
            raise ReleaseError(
                "k_unreachable",
                f"{len(pairs)} eligible samples cannot form an equivalence class of k={k}",
                details={"funnel": release_funnel(sampling, counts, len(pairs), 0)},
            )
        entries = sorted(
            (
                {
                    "sample": pairs[i][0].id,
                    "rid": sample_pseudonym(pkey, pairs[i][0].id),
                    "quasi": dict(g),
                }
                for i, g in anon.kept.items()
            ),
            key=lambda e: str(e["rid"]),
        )
        size = ctx.config.shard_samples
        shards = [entries[i : i + size] for i in range(0, len(entries), size)]
        summary = {
            "plan": {"shards": shards},
            "levels": dict(anon.levels),
            "eligibility": counts,
            "k_requested": k,
            "funnel": release_funnel(sampling, counts, len(anon.suppressed), len(entries)),
        }
        s.add(
            Release(
                id=release_id,
                name=request.name,
                status="building",
                k_requested=k,
                k_achieved=anon.k_achieved,
                sample_count=len(entries),
                suppressed=len(anon.suppressed),
                operator=request.operator,
                keyring_id=wrapped_data.kek.keyring_id,
                kek_version=wrapped_data.kek.version,
                wrapped_data_key=wrapped_data.blob,
                wrapped_pseudonym_key=wrapped_pseud.blob,
                summary=summary,
                created_at=t,
            )
        )
        audit.append(
            s,
            "release.created",
            release_id,
            samples=len(entries),
            k=k,
            k_achieved=anon.k_achieved,
            suppressed=len(anon.suppressed),
            shards=len(shards),
            operator=request.operator,
            only_tenant=request.tenant,
        )
    log.info("release.planned", release_id=release_id, count=len(entries))
    return release_id, len(shards)
