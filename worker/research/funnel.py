"""The research loss funnel: where the candidate jobs of a release went.

Every job that ends with its original in memory is a candidate research sample. The sampler
records each decision here (:func:`record`), as an aggregate count per tenant, calendar month,
outcome and reason in the ledger's ``research_funnel`` table: no job, subject or sample id, so
the table holds nothing about a person. A release restricted to one tenant states that tenant's
decisions only; the tenant itself never appears in a release. A release adds what it excluded
when it was planned (withdrawn or erased since sampling, the sample deleted, the gate) and what
k-anonymity suppressed (:func:`release_funnel`); ``research release`` and ``research status``
print the result (:func:`describe`), and so does the ``no_eligible_samples`` error.

A job delivered again after a crash inside its sampling step may be counted twice: the counts
are for people reading where samples went, not an audit record (the audit log is that).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from worker.ledger.db import Database
from worker.ledger.models import ResearchFunnel
from worker.ledger.tenants import DEFAULT_TENANT

__all__ = ["SAMPLING_STEPS", "add", "describe", "record", "release_funnel", "sampling_totals"]

# The sampler's skip reasons that are a person's choice or state, in the order a reader
# follows them (the rest — already sampled, unsupported media, errors — are "other").
SAMPLING_STEPS: tuple[tuple[str, str], ...] = (
    ("not_selected", "not sampled (research.sample_rate)"),
    ("no_consent", "no research consent"),
    ("minor_without_guardian", "minor without a guardian's consent"),
    ("withdrawn", "consent withdrawn"),
    ("erased", "erased or being erased"),
)
_STEP_REASONS = frozenset(r for r, _ in SAMPLING_STEPS)
# Decisions that say nothing about the candidate (a redelivery finding its sample kept).
_NOT_COUNTED = frozenset({"already_sampled", "no_job"})


def record(
    db: Database, outcome: str, reason: str, when: datetime, tenant: str = DEFAULT_TENANT
) -> None:
    """Add one decision (``outcome`` of the sampler: sampled, staged, skipped, discarded,
    error; ``reason`` its stable code) about a job of ``tenant`` to the month of ``when``, in a
    transaction of its own."""
    if reason in _NOT_COUNTED:
        return
    with db.session() as s:
        add(s, outcome, reason, when, tenant)


def add(
    session: Session, outcome: str, reason: str, when: datetime, tenant: str = DEFAULT_TENANT
) -> None:
    """:func:`record` in the caller's transaction, in one statement (an upsert, SQLAlchemy Core
    on the session's connection): the job service counts the sampler's decision in the
    transaction that ends the job."""
    if reason in _NOT_COUNTED:
        return
    table = cast(Table, ResearchFunnel.__table__)
    connection = session.connection()
    upsert: Any
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        upsert = pg_insert(table)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        upsert = sqlite_insert(table)
    connection.execute(
        upsert.values(
            tenant=tenant,
            month=when.strftime("%Y-%m"),
            outcome=outcome[:16],
            reason=reason[:40],
            count=1,
        ).on_conflict_do_update(
            index_elements=["tenant", "month", "outcome", "reason"],
            set_={"count": table.c.count + 1},
        )
    )


def sampling_totals(db: Database, tenant: str | None = None) -> dict[str, Any]:
    """Every decision recorded so far (about ``tenant``'s jobs only, when one is named):
    ``candidates`` (jobs decided), one count per step of :data:`SAMPLING_STEPS`,
    ``gate_discarded`` by reason, ``other`` by reason, ``sampled`` (kept, or staged for a
    k-Same batch)."""
    query = select(ResearchFunnel.outcome, ResearchFunnel.reason, ResearchFunnel.count)
    if tenant is not None:
        query = query.where(ResearchFunnel.tenant == tenant)
    with db.session() as s:
        rows = s.execute(query).all()
    totals: dict[str, Any] = {"candidates": 0, **{r: 0 for r, _ in SAMPLING_STEPS}}
    gate: dict[str, int] = {}
    other: dict[str, int] = {}
    sampled = 0
    for outcome, reason, n in rows:
        totals["candidates"] += n
        if outcome in ("sampled", "staged"):
            sampled += n
        elif outcome == "discarded":
            gate[reason] = gate.get(reason, 0) + n
        elif outcome == "skipped" and reason in _STEP_REASONS:
            totals[reason] += n
        else:
            other[reason] = other.get(reason, 0) + n
    totals["gate_discarded"] = dict(sorted(gate.items()))
    totals["other"] = dict(sorted(other.items()))
    totals["sampled"] = sampled
    return totals


def release_funnel(
    sampling: Mapping[str, Any],
    eligibility: Mapping[str, int],
    suppressed: int,
    released: int,
) -> dict[str, Any]:
    """The whole funnel of one release: the sampling decisions, what the plan excluded among
    the stored samples (``eligibility`` of :mod:`worker.research.release.plan`), what
    k-anonymity suppressed and what was released."""
    return {
        "sampling": dict(sampling),
        "stored_samples": int(eligibility.get("considered", 0)),
        "excluded": {
            "withdrawn": int(eligibility.get("excluded_withdrawn", 0)),
            "erased": int(eligibility.get("excluded_erased", 0)),
            "no_consent": int(eligibility.get("excluded_no_consent", 0)),
            "minor_without_guardian": int(eligibility.get("excluded_minor", 0)),
            "deleted": int(eligibility.get("excluded_deleted", 0)),
            "gate": int(eligibility.get("excluded_gate", 0)),
            "after_plan": int(eligibility.get("dropped_after_plan", 0)),
        },
        "suppressed_k_anonymity": int(suppressed),
        "released": int(released),
    }


_EXCLUDED_LABELS = {
    "withdrawn": "consent withdrawn since sampling",
    "erased": "erased since sampling",
    "no_consent": "no research consent any more",
    "minor_without_guardian": "minor without a guardian's consent",
    "deleted": "sample deleted (expired)",
    "gate": "failed the residual-face gate",
    "after_plan": "withdrawn or erased while the release was built",
}


def describe(funnel: Mapping[str, Any]) -> list[tuple[str, int]]:
    """The funnel as (label, count) lines for people, in the order candidates are lost."""
    sampling = funnel.get("sampling", {})
    lines: list[tuple[str, int]] = [
        ("candidate jobs (sampling decisions)", sampling.get("candidates", 0))
    ]
    lines += [(f"  lost: {label}", int(sampling.get(r, 0))) for r, label in SAMPLING_STEPS]
    for reason, n in sampling.get("gate_discarded", {}).items():
        lines.append((f"  lost: discarded by the residual-face gate ({reason})", int(n)))
    for reason, n in sampling.get("other", {}).items():
        lines.append((f"  lost: not kept ({reason})", int(n)))
    lines.append(("samples kept", int(sampling.get("sampled", 0))))
    lines.append(("stored samples considered by the release", int(funnel.get("stored_samples", 0))))
    for key, label in _EXCLUDED_LABELS.items():
        n = int(funnel.get("excluded", {}).get(key, 0))
        if n:
            lines.append((f"  excluded: {label}", n))
    if "suppressed_k_anonymity" in funnel:
        lines.append(("  suppressed for k-anonymity", int(funnel["suppressed_k_anonymity"])))
    if "released" in funnel:
        lines.append(("released", int(funnel["released"])))
    return lines
