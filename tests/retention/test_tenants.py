"""Tenants through jobs, subject rights, holds, exports, the CLI and research releases (issue 17).

Two tenants hold a subject with the same upstream id, ``u1``: every rights operation on one
tenant's ``u1`` leaves the other's untouched, and an operation naming the other tenant is refused
exactly like an unknown subject or job. Jobs are submitted through the real job client (nothing
consumes the queue: the originals stay); outputs and research samples are seeded encrypted
through the vault. Releases span tenants unless ``--tenant`` restricts them, and no tenant id
appears in any file of a release.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, cast

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from tests.retention.seed import seed_objects
from worker.dispatch import names
from worker.jobs.client import JobClient
from worker.jobs.errors import JobNotFound, SubmitRefused
from worker.jobs.reads import job_status_view
from worker.ledger.errors import NotFound
from worker.ledger.models import AuditEntry, Job, Release, StoredObject, Subject
from worker.ledger.subjects import Consent, SubjectRef
from worker.objects.errors import ObjectsError

# Distinctive ids, so a search of a release's bytes for them means something.
A, B = "tenant-acme7", "tenant-bravo7"
QUASI = {
    "age_band": "30-39",
    "region": "Zhejiang",
    "device_family": "ios",
    "capture_month": "2026-11",
}


def _jpeg(shade: int = 90, size: int = 64) -> bytes:
    import cv2
    import numpy as np

    img = np.full((size, size, 3), shade, dtype=np.uint8)
    img[size // 4 : size // 2, size // 4 : size // 2] = (shade + 80) % 256
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return bytes(buf)


@dataclass
class Side:
    """One tenant's ``u1``: its ledger ref, its job, and the keys of its seeded objects."""

    tenant: str
    ref: SubjectRef
    job: str
    outputs: list[str]
    research: list[str]
    payload: bytes


@dataclass
class World:
    c: Any
    client: JobClient
    sides: dict[str, Side]
    enqueued: list[str] = field(default_factory=list)
    sent: list[tuple[str, list[Any]]] = field(default_factory=list)


def _client(c: Any, enqueued: list[str], sent: list[tuple[str, list[Any]]]) -> JobClient:
    """The real job client over the container's ledger and store; nothing consumes its queue."""
    return JobClient(
        c.db,
        c.records,
        c.subjects,
        enqueue=enqueued.append,
        max_upload_bytes=c.settings.max_upload_bytes,
        send=lambda task, args, queue: sent.append((task, list(args))),
    )


@pytest.fixture
def world(embedded: Any) -> World:
    enqueued: list[str] = []
    sent: list[tuple[str, list[Any]]] = []
    client = _client(embedded, enqueued, sent)
    sides = {}
    for tenant in (A, B):
        payload = f"{tenant} output bytes".encode()
        job = client.submit(
            _jpeg(),
            "detect",
            subject_id="u1",
            consent=Consent(research=True),
            tenant=tenant,
        )
        ref = embedded.subjects.find("u1", tenant=tenant)
        assert ref is not None
        outputs = seed_objects(
            embedded, 2, subject=ref, job_id=job, age=timedelta(0), payload=payload
        )
        research = seed_objects(
            embedded, 1, object_class="research", subject=ref, age=timedelta(0), payload=payload
        )
        sides[tenant] = Side(tenant, ref, job, outputs, research, payload)
    assert sides[A].ref.id != sides[B].ref.id
    return World(embedded, client, sides, enqueued, sent)


def _live(c: Any, subject_id: str, object_class: str | None = None) -> int:
    with c.db.session() as s:
        q = select(func.count()).where(
            StoredObject.subject_id == subject_id, StoredObject.deleted_at.is_(None)
        )
        if object_class is not None:
            q = q.where(StoredObject.object_class == object_class)
        return int(s.execute(q).scalar_one())


def _intact(w: World, side: Side) -> None:
    """The side's subject is untouched: not erased, its outputs and sample still decrypt."""
    with w.c.db.session() as s:
        row = s.get(Subject, side.ref.id)
        assert row.erased_at is None and row.erase_requested_at is None
        assert row.consent_withdrawn_at is None and row.research_consent
    for key in side.outputs:
        assert w.c.vault.read(key, "output", side.job) == side.payload
    assert w.c.vault.read(side.research[0], "research", None) == side.payload
    assert _live(w.c, side.ref.id) == 4  # original, two outputs, one research sample


def _audit_tenants(c: Any, entity: str, event: str) -> list[str]:
    with c.db.session() as s:
        return list(
            s.scalars(
                select(AuditEntry.tenant).where(
                    AuditEntry.entity == entity, AuditEntry.event == event
                )
            )
        )


def test_erasing_one_tenants_u1_leaves_the_others(world: World) -> None:
    a, b = world.sides[A], world.sides[B]
    rights = world.c.rights
    with pytest.raises(NotFound):  # another tenant's subject: refused like an unknown one
        rights.erase(a.ref.id, tenant=B)
    _intact(world, a)
    result = rights.erase(a.ref.id, tenant=A)
    assert not result.pending and result.deleted == 4
    assert _live(world.c, a.ref.id) == 0
    with pytest.raises(ObjectsError):
        world.c.vault.read(a.outputs[0], "output", a.job)  # gone, and its key shredded
    _intact(world, b)
    assert _audit_tenants(world.c, a.ref.id, "subject.erased") == [A]
    assert _audit_tenants(world.c, a.ref.id, "subject.erase_requested") == [A]
    # The client resolves u1 in the requester's tenant; the task carries the opaque id only.
    assert world.client.request_erasure("u1", tenant=B)
    assert world.sent == [(names.ERASE, [b.ref.id])]
    assert not world.client.request_erasure("u1", tenant="tenant-other")
    assert world.client.subject_ref("u1", tenant=A) == a.ref.id  # erased, still known


def test_the_privacy_task_handler_erases_any_tenants_subject(world: World) -> None:
    from worker.dispatch import handlers

    b = world.sides[B]
    assert handlers.erase(world.c, b.ref.id)["subject_erased"]
    _intact(world, world.sides[A])
    assert handlers.withdraw_consent(world.c, world.sides[A].ref.id)["action"] == "withdraw_consent"


def test_withdrawing_one_tenants_consent_leaves_the_others(world: World) -> None:
    a, b = world.sides[A], world.sides[B]
    with pytest.raises(NotFound):
        world.c.rights.withdraw_consent(b.ref.id, tenant=A)
    result = world.c.rights.withdraw_consent(b.ref.id, tenant=B)
    assert result.deleted == 1
    assert _live(world.c, b.ref.id, "research") == 0
    assert _live(world.c, b.ref.id, "output") == 2  # outputs are not research material
    _intact(world, a)
    assert _audit_tenants(world.c, b.ref.id, "subject.consent_withdrawn") == [B]
    assert world.client.request_consent_withdrawal("u1", tenant=A)
    assert world.sent == [(names.WITHDRAW, [a.ref.id])]


def test_holds_are_per_tenant(world: World) -> None:
    a, b = world.sides[A], world.sides[B]
    rights = world.c.rights
    calls: list[Callable[[], Any]] = [
        lambda: rights.hold(subject_id=a.ref.id, reason="litigation", tenant=B),
        lambda: rights.hold(job_id=a.job, reason="litigation", tenant=B),
        lambda: rights.hold(job_id=a.job, reason="litigation", note="n", tenant=B),
        lambda: rights.hold_info(subject_id=a.ref.id, tenant=B),
        lambda: rights.hold_info(job_id=a.job, tenant=B),
        lambda: rights.release_hold(subject_id=a.ref.id, tenant=B),
        lambda: rights.release_hold(job_id=a.job, tenant=B),
    ]
    for call in calls:
        with pytest.raises(NotFound, match="no such subject or job"):
            call()
    held = rights.hold(subject_id=a.ref.id, reason="litigation", note="case 7", tenant=A)
    assert held["held"] and held["note"]
    assert rights.hold_info(subject_id=a.ref.id, tenant=A)["note"] == "case 7"
    assert not rights.hold_info(subject_id=b.ref.id, tenant=B)["held"]
    assert rights.hold(job_id=b.job, reason="court_order", tenant=B)["held"]
    assert rights.hold_info(job_id=b.job, tenant=B)["reason"] == "court_order"
    assert _audit_tenants(world.c, a.ref.id, "hold.set") == [A]
    assert _audit_tenants(world.c, b.job, "hold.set") == [B]
    # A's subject hold keeps A's erasure pending; B's erasure is not held by A's hold (B's job
    # hold keeps that job's objects only).
    assert rights.erase(a.ref.id, tenant=A).pending
    erased_b = rights.erase(b.ref.id, tenant=B)
    assert erased_b.pending and erased_b.held == 3 and _live(world.c, b.ref.id) == 3
    rights.release_hold(job_id=b.job, tenant=B)
    assert rights.complete_pending_erasures(datetime.now(UTC)) == 1  # B's only: A still held
    with world.c.db.session() as s:
        assert s.get(Subject, b.ref.id).erased_at is not None
        assert s.get(Subject, a.ref.id).erased_at is None
    for key in a.outputs:
        assert world.c.vault.read(key, "output", a.job) == a.payload
    rights.release_hold(subject_id=a.ref.id, tenant=A)
    assert _audit_tenants(world.c, a.ref.id, "hold.released") == [A]
    assert rights.complete_pending_erasures(datetime.now(UTC)) == 1


def test_export_entries_stream_one_tenants_subject(world: World, tmp_path: Path) -> None:
    a, b = world.sides[A], world.sides[B]
    with pytest.raises(NotFound):  # refused when called, before any member is produced
        world.c.rights.export_entries(a.ref.id, tenant=B)
    entries = world.c.rights.export_entries(a.ref.id, tenant=A)
    assert _audit_tenants(world.c, a.ref.id, "subject.exported") == [A]  # audited up front
    members = [(name, b"".join(chunks)) for name, chunks in entries]
    assert members[0][0] == "report.json"
    report = json.loads(members[0][1])
    assert report["subject"]["id"] == a.ref.id and report["subject"]["tenant"] == A
    assert [j["id"] for j in report["jobs"]] == [a.job]
    data = dict(members[1:])
    assert sorted(data) == sorted(report["files"])
    assert sorted(data) == sorted([f"output/{a.job}/o0", f"output/{a.job}/o1", "research/none/o0"])
    assert set(data.values()) == {a.payload}
    assert b.ref.id.encode() not in members[0][1] and b.job.encode() not in members[0][1]
    # The directory export is the same members, written privately.
    summary = world.c.rights.export(a.ref.id, tmp_path / "exp", tenant=A)
    assert sorted(summary["files"]) == sorted(data)
    for name, body in data.items():
        assert (tmp_path / "exp" / name).read_bytes() == body
        assert (tmp_path / "exp" / name).stat().st_mode & 0o077 == 0
    assert summary["jobs"] == 1 and summary["objects"] == 4


def test_job_reads_hide_another_tenants_job(world: World) -> None:
    a = world.sides[A]
    db = world.c.db
    with pytest.raises(JobNotFound) as other:
        job_status_view(db, a.job, tenant=B)
    with pytest.raises(JobNotFound) as unknown:
        job_status_view(db, "no-such-job", tenant=B)
    assert str(other.value) == str(unknown.value)  # indistinguishable
    assert job_status_view(db, a.job, tenant=A).job_id == a.job
    assert job_status_view(db, a.job).status == "queued"  # the operator sees every tenant's
    assert world.client.job_exists(a.job, tenant=A) and not world.client.job_exists(a.job, tenant=B)
    with pytest.raises(JobNotFound):
        world.client.outputs(a.job, tenant=B)


class _Unread(io.RawIOBase):
    """Media that must never be read (an idempotent retry stores nothing)."""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        raise AssertionError("the retried submission's media was read")


def _originals(c: Any) -> int:
    with c.db.session() as s:
        q = select(func.count()).where(StoredObject.object_class == "original")
        return int(s.execute(q).scalar_one())


def test_submit_is_idempotent_per_tenant(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    client, c = world.client, world.c
    before, queued = _originals(c), len(world.enqueued)
    first = client.submit(
        _jpeg(),
        "detect",
        subject_id="u2",
        tenant=A,
        idempotency_key="retry-1",
        callback_url="https://hooks.example/x",
        api_key_id="k1",
    )
    unread = cast(BinaryIO, _Unread())
    again = client.submit(unread, "detect", subject_id="u2", tenant=A, idempotency_key="retry-1")
    assert again == first == client.find_idempotent(A, "retry-1")
    assert _originals(c) == before + 1 and len(world.enqueued) == queued + 1
    # The same key in another tenant is another job.
    other = client.submit(_jpeg(), "detect", subject_id="u2", tenant=B, idempotency_key="retry-1")
    assert other != first and client.find_idempotent(B, "retry-1") == other
    assert client.find_idempotent(A, "never-used") is None
    # A race: the second submission checked before the first recorded its job; the unique
    # index decides, and the loser answers the winner's id without reading its media.
    monkeypatch.setattr(client, "find_idempotent", _once_none(client.find_idempotent))
    unread = cast(BinaryIO, _Unread())
    assert (
        client.submit(unread, "detect", subject_id="u2", tenant=A, idempotency_key="retry-1")
        == first
    )
    assert _originals(c) == before + 2
    with c.db.session() as s:
        job = s.get(Job, first)
        assert (job.tenant, job.idempotency_key) == (A, "retry-1")
        assert (job.callback_url, job.api_key_id) == ("https://hooks.example/x", "k1")
        assert (job.webhook_state, job.webhook_attempts, job.webhook_error) == (None, 0, None)
        assert s.scalar(select(func.count()).where(Job.idempotency_key == "retry-1")) == 2
    assert _audit_tenants(c, first, "job.submitted") == [A]
    with pytest.raises(SubmitRefused) as caught:
        client.submit(_jpeg(), "detect", subject_id="u2", tenant=A, idempotency_key="x" * 129)
    assert caught.value.code == "bad_params"


def test_a_refused_upload_gives_its_idempotency_key_up(world: World) -> None:
    """An upload refused mid-stream (over the limit) was never accepted: the retry with the same
    key submits anew (the failed job keeps no key), in that tenant only."""
    client, c = world.client, world.c
    client.max_upload_bytes = 2000
    with pytest.raises(SubmitRefused) as caught:
        client.submit(b"x" * 5000, "detect", subject_id="u3", tenant=A, idempotency_key="big")
    assert caught.value.code == "too_large"
    assert client.find_idempotent(A, "big") is None
    with c.db.session() as s:
        failed = s.scalars(select(Job).where(Job.error_code == "too_large")).one()
        assert (failed.tenant, failed.idempotency_key) == (A, None)
    retried = client.submit(_jpeg(), "detect", subject_id="u3", tenant=A, idempotency_key="big")
    assert retried != failed.id and client.find_idempotent(A, "big") == retried


def _once_none(real: Any) -> Any:
    calls: list[int] = []

    def find(tenant: str, key: str) -> str | None:
        calls.append(1)
        return None if len(calls) == 1 else real(tenant, key)

    return find


def _cli(*args: str, code: int = 0) -> Any:
    from worker.cli import app

    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, (args, result.stdout, result.exception)
    return json.loads(result.stdout) if code == 0 and "--json" in args else result.stdout


def test_cli_commands_take_tenant(world: World, tmp_path: Path) -> None:
    a, b = world.sides[A], world.sides[B]
    assert _cli("status", a.job, "--tenant", A, "--json")["job_id"] == a.job
    _cli("status", a.job, "--tenant", B, "--json", code=2)
    _cli("status", a.job, "--json", code=2)  # the CLI's default tenant does not see it
    _cli("status", a.job, "--tenant", "Not/A/Tenant", "--json", code=2)
    _cli("result", a.job, "--tenant", B, "--out", str(tmp_path / "r"), "--json", code=2)
    _cli("erase", "u1", "--yes", "--json", code=2)  # no u1 in the default tenant
    _cli("hold", "set", "--job", a.job, "--tenant", B, "--reason", "litigation", code=2)
    held = _cli("hold", "set", "--subject", "u1", "--tenant", A, "--reason", "litigation", "--json")
    assert held["subject"] == a.ref.id and held["held"]
    assert _cli("hold", "show", "--subject", "u1", "--tenant", A, "--json")["held"]
    assert not _cli("hold", "show", "--subject", "u1", "--tenant", B, "--json")["held"]
    withdrawn = _cli("consent", "withdraw", "u1", "--tenant", B, "--json")
    assert withdrawn["subject"] == b.ref.id
    exported = _cli("export", "u1", "--tenant", A, "--out", str(tmp_path / "x"), "--json")
    assert sorted(exported["files"])[0] == f"output/{a.job}/o0"
    erased = _cli("erase", "u1", "--tenant", B, "--yes", "--json")
    assert erased["subject"] == b.ref.id and erased["subject_erased"]
    for key in a.outputs:
        assert world.c.vault.read(key, "output", a.job) == a.payload
    _cli("hold", "release", "--subject", "u1", "--tenant", A, "--yes", "--json")
    photo = tmp_path / "p.jpg"
    photo.write_bytes(_jpeg())
    job = _cli("submit", str(photo), "--subject", "u9", "--tenant", A, "--json")["job_id"]
    with world.c.db.session() as s:
        assert s.get(Job, job).tenant == A
    assert world.c.subjects.find("u9", tenant=A) is not None
    assert world.c.subjects.find("u9") is None


# ----- research releases ----------------------------------------------------------------------


@pytest.fixture
def researcher_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return tmp_path


def _sample(c: Any, ref: SubjectRef, image: bytes, operator: str) -> None:
    from worker.ids import new_id
    from worker.ledger.models import ResearchSample

    sample_id, object_id, t = new_id(), new_id(), datetime.now(UTC)
    key = f"research/{sample_id}"
    with c.db.session() as s:
        s.add(
            StoredObject(
                id=object_id, key=key, object_class="research", subject_id=ref.id, created_at=t
            )
        )
    c.vault.put(key, "research", None, ref.key_id, image)
    with c.db.session() as s:
        s.add(
            ResearchSample(
                id=sample_id,
                object_id=object_id,
                subject_id=ref.id,
                media_kind="image",
                operator=operator,
                params={},
                faces=1,
                gate={"passed": True, "residual_faces": 0, "reason": "ok", "frames_checked": 1},
                quasi=dict(QUASI),
                created_at=t,
            )
        )


def _release_bytes(c: Any, release_id: str, out: Path) -> list[bytes]:
    blobs = [p.read_bytes() for p in out.rglob("*") if p.is_file()]
    for shard in out.glob("shard-*.tar"):
        with tarfile.open(shard) as tar:
            blobs += [tar.extractfile(m).read() for m in tar if m.isfile()]  # type: ignore[union-attr]
    blobs += [c.store.get(k).read() for k in c.store.keys(f"releases/{release_id}/")]
    return blobs


def test_releases_span_tenants_unless_restricted_and_name_none(
    embedded: Any, researcher_home: Path
) -> None:
    from worker.research.release import ReleaseRequest
    from worker.research.release.artifacts import read_manifest
    from worker.research.release.keys import write_keypair
    from worker.research.release.pull import pull, trust

    c = embedded
    for tenant in (A, B):
        for i in range(3):
            ref = c.subjects.ensure(f"r{i}", Consent(research=True), tenant=tenant)
            _sample(c, ref, _jpeg(40 + 30 * i, 48), "mask" if tenant == A else "blur")
    whole = c.releases.create(ReleaseRequest(name="all-tenants", k=2))
    assert whole.samples == 6
    only = _cli("research", "release", "--name", "only-a", "--k", "2", "--tenant", A, "--json")
    assert only["samples"] == 3
    _cli("research", "release", "--name", "bad", "--tenant", "NOPE", "--json", code=2)
    keydir = researcher_home / "keys"
    keydir.mkdir()
    write_keypair(keydir / "r.key", keydir / "r.pub.pem")
    priv, pub = (keydir / "r.key").read_bytes(), (keydir / "r.pub.pem").read_bytes()
    for release_id, count in ((whole.release_id, 6), (only["release_id"], 3)):
        c.releases.grant(release_id, pub)
        trust(c.store.get(f"releases/{release_id}/signer.pub").read())
        out = researcher_home / release_id
        pull(c.store, release_id, priv, out)
        media = [
            r
            for r in read_manifest((out / "manifest.parquet").read_bytes())
            if r["kind"] == "media"
        ]
        assert len(media) == count
        for row in read_manifest((out / "manifest.parquet").read_bytes()):
            assert not any(t in str(v) for v in row.values() for t in (A, B))
        for blob in _release_bytes(c, release_id, out):
            for tenant in (A, B):
                assert tenant.encode() not in blob, release_id
        with c.db.session() as s:
            row = s.get(Release, release_id)
            assert not any(t in json.dumps(row.summary, default=str) for t in (A, B))
    # the whole release holds both tenants' samples; the restricted one A's only
    for release_id, operators in (
        (whole.release_id, {"mask", "blur"}),
        (only["release_id"], {"mask"}),
    ):
        rows = read_manifest((researcher_home / release_id / "manifest.parquet").read_bytes())
        assert {r["operator"] for r in rows if r["kind"] == "media"} == operators
    with c.db.session() as s:
        details = s.scalars(
            select(AuditEntry.details).where(
                AuditEntry.event == "release.created", AuditEntry.entity == only["release_id"]
            )
        ).one()
    assert json.loads(details)["only_tenant"] == A  # the ledger's audit notes the restriction
