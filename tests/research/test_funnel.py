"""Where the candidates went: the research loss funnel, counted by the real sampler at job time
(ledger table ``research_funnel``: aggregate counts, no ids) and printed by ``research release``
(also with ``no_eligible_samples``) and ``research status``, run as a person runs them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from sqlalchemy import inspect, select

from tests.workers import CELERY, ROOT, settings_env
from worker.ledger.models import ResearchFunnel
from worker.ledger.subjects import Consent

FACEMEDIA = str(Path(CELERY).with_name("facemedia"))
ATTRS = {"age": "34", "region": "Zhejiang", "device": "iPhone14,2"}


def _jpeg(image: Any) -> bytes:
    import cv2
    import numpy as np

    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_RGB2BGR)))
    assert ok
    return bytes(buf)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FACEMEDIA, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )


def test_release_and_status_report_where_the_candidates_went(
    make_settings: Any, tmp_path: Path
) -> None:
    from skimage import data

    from worker.bootstrap import Container, set_container

    # the mirrored astronaut passes the default profile's gate; the coffee cup has no face,
    # so its derivative fails the gate with ``no_source_face``
    face = _jpeg(data.astronaut()[:, ::-1])
    no_face = _jpeg(data.coffee())
    home = tmp_path / "var"
    c = Container(make_settings(home=home, research={"sample_rate": 0.5}))
    set_container(c)
    jobs: dict[str, list[str]] = {"face": [], "no_face": []}
    try:

        def submit(media: bytes, subject: str, consent: Consent) -> str:
            job = c.client.submit(
                media, "detect", subject_id=subject, consent=consent, attributes=ATTRS
            )
            assert c.service.status(job)["status"] == "succeeded"
            return job

        yes = Consent(research=True)
        # enough consenting jobs that some are drawn and some are not (the draw is a keyed
        # hash of the job id: reproducible per job, unknown in advance)
        for i in range(40):
            jobs["face"].append(submit(face, f"adult-{i}", yes))
            drawn = [j for j in jobs["face"] if c.sampler.selected(j)]
            if len(drawn) >= 2 and len(drawn) < len(jobs["face"]):
                break
        for i in range(40):
            jobs["no_face"].append(submit(no_face, f"cup-{i}", yes))
            if any(c.sampler.selected(j) for j in jobs["no_face"]):
                break
        submit(face, "no-consent", Consent(research=False))
        submit(face, "minor", Consent(research=True, is_minor=True))
        with c.db.session() as s:  # aggregate counts only: nothing that names a job or person
            assert {col.name for col in inspect(ResearchFunnel).columns} == {
                "tenant",  # the upstream service's namespace (migration 0014), not a person
                "month",
                "outcome",
                "reason",
                "count",
            }
            rows = s.execute(select(ResearchFunnel.outcome, ResearchFunnel.reason)).all()
            assert ("skipped", "not_selected") in rows
        consenting = jobs["face"] + jobs["no_face"]
        not_drawn = sum(1 for j in consenting if not c.sampler.selected(j))
        drawn_faces = sum(1 for j in jobs["face"] if c.sampler.selected(j))
        drawn_cups = sum(1 for j in jobs["no_face"] if c.sampler.selected(j))
    finally:
        c.close()
        set_container(None)

    env = settings_env({"home": home, "research__sample_rate": 0.5})

    # nothing eligible under another operator: the error carries the funnel
    refused = _cli(env, "research", "release", "--name", "none", "--operator", "blur", "--json")
    assert refused.returncode == 1, refused.stderr[-2000:]
    error = json.loads(refused.stdout)
    assert error["error"] == "no_eligible_samples"
    sampling = error["funnel"]["sampling"]
    assert sampling["candidates"] == len(consenting) + 2
    assert sampling["not_selected"] == not_drawn
    assert sampling["no_consent"] == 1 and sampling["minor_without_guardian"] == 1
    assert sampling["gate_discarded"] == {"no_source_face": drawn_cups}
    assert sampling["sampled"] == drawn_faces
    # the table form says the same, on stderr
    plain = _cli(env, "research", "release", "--name", "none", "--operator", "blur")
    assert plain.returncode == 1
    assert "not sampled (research.sample_rate)" in plain.stderr
    assert "discarded by the residual-face gate (no_source_face)" in plain.stderr

    made = _cli(env, "research", "release", "--name", "f1", "--k", "1", "--json")
    assert made.returncode == 0, made.stderr[-2000:]
    release = json.loads(made.stdout)
    assert release["status"] == "published" and release["samples"] == drawn_faces
    funnel = release["funnel"]
    assert funnel["sampling"] == sampling
    assert funnel["stored_samples"] == drawn_faces and funnel["released"] == drawn_faces
    assert funnel["suppressed_k_anonymity"] == 0
    status = _cli(env, "research", "status", "f1")  # by name, for a person
    assert status.returncode == 0, status.stderr[-2000:]
    for line in ("where the candidates went", "minor without a guardian's consent", "released"):
        assert line in status.stdout, status.stdout


def test_the_funnel_is_counted_per_tenant(embedded: Any) -> None:
    """Each decision is counted under its job's tenant (migration 0014): a release restricted
    to one tenant (``research release --tenant``) states that tenant's candidates only, an
    operator's release every tenant's."""
    from datetime import UTC, datetime

    from skimage import data

    from worker.research import funnel

    face = _jpeg(data.astronaut()[:, ::-1])
    consent = Consent(research=True)
    for tenant, n in (("default", 2), ("tenant-b", 3)):
        for k in range(n):
            job = embedded.client.submit(
                face, "detect", subject_id=f"s{k}", consent=consent, tenant=tenant
            )
            assert embedded.service.status(job)["status"] == "succeeded"
    with embedded.db.session() as s:
        rows = s.execute(select(ResearchFunnel.tenant, ResearchFunnel.count)).all()
    by_tenant: dict[str, int] = {}
    for tenant, count in rows:
        by_tenant[tenant] = by_tenant.get(tenant, 0) + count
    assert by_tenant == {"default": 2, "tenant-b": 3}
    assert funnel.sampling_totals(embedded.db)["candidates"] == 5
    assert funnel.sampling_totals(embedded.db, "tenant-b")["candidates"] == 3
    assert funnel.sampling_totals(embedded.db, "nobody")["candidates"] == 0
    # a decision recorded outside a job's transaction lands on the named tenant's row too
    funnel.record(embedded.db, "skipped", "no_consent", datetime.now(UTC), "tenant-b")
    assert funnel.sampling_totals(embedded.db, "tenant-b")["no_consent"] >= 1


def test_migration_0014_gives_the_old_counts_to_the_default_tenant(tmp_path: Path) -> None:
    from alembic import command

    from worker.ledger.db import Database, alembic_config

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    cfg = alembic_config(url)
    command.upgrade(cfg, "0013")
    db = Database(url)
    try:
        with db.engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO research_funnel (month, outcome, reason, count)"
                " VALUES ('2026-11', 'skipped', 'no_consent', 4)"
            )
        command.upgrade(cfg, "0014")
        with db.engine.begin() as conn:
            rows = conn.exec_driver_sql(
                "SELECT tenant, month, outcome, reason, count FROM research_funnel"
            ).all()
            assert [tuple(r) for r in rows] == [("default", "2026-11", "skipped", "no_consent", 4)]
            conn.exec_driver_sql(
                "INSERT INTO research_funnel (tenant, month, outcome, reason, count)"
                " VALUES ('tenant-b', '2026-11', 'skipped', 'no_consent', 3)"
            )
        command.downgrade(cfg, "0013")  # the counts are summed over tenants
        with db.engine.begin() as conn:
            rows = conn.exec_driver_sql("SELECT month, reason, count FROM research_funnel").all()
            assert [tuple(r) for r in rows] == [("2026-11", "no_consent", 7)]
        assert "tenant" not in {
            c["name"] for c in inspect(db.engine).get_columns("research_funnel")
        }
    finally:
        db.dispose()
