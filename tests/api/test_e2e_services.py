"""The HTTP API on the distributed spine, end to end: ``facemedia serve`` (a real uvicorn server in
a subprocess, over real HTTP) with the ledger on PostgreSQL, a Redis broker, the store on the
session's SeaweedFS server and a real ``celery worker`` process doing the work.

Two tenants, each with a key made by the CLI, submit the same photo for the *same* upstream
subject id; each polls its job to ``succeeded`` and fetches its output; neither can see the
other's job; tenant ``alpha`` erases the subject, after which every version of its job's objects
is gone from the store while tenant ``beta``'s subject (same id, another namespace) keeps its
job and output.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    REDIS_DBS,
    REGION,
    fresh_pg_database,
    lease_redis_db,
    need,
    port_open,
    release_redis_db,
)
from tests.media_signatures import plaintext_hits
from tests.serving import facemedia_serve
from tests.workers import celery_worker, settings_env

pytestmark = pytest.mark.services

FACEMEDIA = str(Path(sys.executable).with_name("facemedia"))
SUBJECT = f"e2e-subject-{uuid.uuid4().hex[:8]}"
SCOPES = ("jobs:write", "jobs:read", "subjects:manage")
JOB_TIMEOUT = 60.0


@dataclass(frozen=True)
class Stack:
    """The running server's URL, one key per tenant, the store's bucket and the logs."""

    url: str
    keys: dict[str, str]
    s3: Any
    bucket: str
    server_log: Path
    worker_log: Path
    settings: dict[str, Any]


def _create_keys(settings: dict[str, Any], tenants: tuple[str, ...]) -> dict[str, str]:
    """A key per tenant with every scope, made by the CLI (``apikey create --json``, one process
    per tenant, at once)."""
    scopes = [arg for scope in SCOPES for arg in ("--scope", scope)]
    procs = {
        tenant: subprocess.Popen(
            [FACEMEDIA, "apikey", "create", "--tenant", tenant, *scopes, "--json"],
            env=settings_env(settings),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tenant in tenants
    }
    keys = {}
    for tenant, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, (stdout, stderr)
        created = json.loads(stdout)
        assert set(created) >= {"key_id", "key", "webhook_secret"}
        keys[tenant] = str(created["key"])
    return keys


@pytest.fixture(scope="module")
def stack(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Server, worker, ledger, broker and store for the module (started once)."""
    import boto3

    from tests.seaweed import new_bucket_name
    from worker.bootstrap import Container
    from worker.settings import load_settings

    need("PostgreSQL", port_open("127.0.0.1", 5432), "nothing listens on 127.0.0.1:5432")
    need("Redis", port_open("127.0.0.1", 6379), "nothing listens on 127.0.0.1:6379")
    tmp = tmp_path_factory.mktemp("api-e2e")
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION)
    bucket = new_bucket_name("api")
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    broker = lease_redis_db()  # a database of its own: no other test's queues
    need("a free Redis database", broker is not None, f"every one of {REDIS_DBS} is leased")
    assert broker is not None
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(release_redis_db, broker)
        database_url = cleanup.enter_context(fresh_pg_database("fm_api_e2e"))
        settings: dict[str, Any] = {
            "home": tmp / "var",
            "broker_url": broker,
            "database_url": database_url,
            "store_url": f"s3://{bucket}/v1",
            "s3_endpoint_url": s3_endpoint,
            "s3_region": REGION,
            "store_region": REGION,  # SeaweedFS has no regions: the operator names it
            "log_level": "INFO",  # the access log and the job log, scanned below
        }
        operator = Container(load_settings(**settings))
        operator.db.migrate()  # the ledger exists before either side starts
        operator.close()
        worker_log, server_log = tmp / "worker.log", tmp / "server.log"
        # the worker starts while the keys are made and the server comes up
        cleanup.enter_context(
            celery_worker(settings, worker_log, queues="media,privacy", concurrency=1)
        )
        keys = _create_keys(settings, ("alpha", "beta"))
        url = cleanup.enter_context(
            facemedia_serve(settings_env(settings), server_log, ready_s=30, stop_s=15)
        ).url
        yield Stack(url, keys, s3, bucket, server_log, worker_log, settings)


def _versions(stack: Stack, prefix: str) -> list[dict[str, Any]]:
    """Every version and delete marker under ``prefix`` of the bucket."""
    found: list[dict[str, Any]] = []
    pages = stack.s3.get_paginator("list_object_versions").paginate(
        Bucket=stack.bucket, Prefix=prefix
    )
    for page in pages:
        found += page.get("Versions", []) + page.get("DeleteMarkers", [])
    return found


def _wait_succeeded(http: Any, job_id: str) -> dict[str, Any]:
    """Poll ``GET /v1/jobs/{id}`` until the job ended and its original is deleted."""
    deadline = time.monotonic() + JOB_TIMEOUT
    while True:
        response = http.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        view: dict[str, Any] = response.json()
        if view["status"] not in ("queued", "processing") and view["original_deleted"]:
            return view
        assert time.monotonic() < deadline, view
        time.sleep(0.2)


def test_two_tenants_submit_poll_fetch_erase_over_http(stack: Stack, astronaut_jpeg: bytes) -> None:
    import httpx

    def client(tenant: str) -> httpx.Client:
        auth = {"Authorization": f"Bearer {stack.keys[tenant]}"}
        return httpx.Client(base_url=stack.url, headers=auth, timeout=30)

    with client("alpha") as alpha, client("beta") as beta:
        jobs: dict[str, str] = {}
        for tenant, http in (("alpha", alpha), ("beta", beta)):
            response = http.post(
                "/v1/jobs",
                files={"file": ("photo.jpg", astronaut_jpeg, "image/jpeg")},
                data={"job": "detect", "subject": SUBJECT},
            )
            assert response.status_code == 202, response.text
            body = response.json()
            assert body["status"] == "queued"
            assert response.headers["location"] == f"/v1/jobs/{body['job_id']}"
            jobs[tenant] = body["job_id"]

        for tenant, http in (("alpha", alpha), ("beta", beta)):
            view = _wait_succeeded(http, jobs[tenant])
            assert (view["status"], view["faces"], view["error_code"]) == ("succeeded", 1, None)
            assert "faces.json" in view["outputs"]
            out = http.get(f"/v1/jobs/{jobs[tenant]}/outputs/faces.json")
            assert out.status_code == 200, out.text
            assert out.headers["content-type"].startswith("application/json")
            assert len(json.loads(out.content)["faces"]) == 1

        # the original is gone from the store (every version), the output is there, encrypted
        for job_id in jobs.values():
            assert _versions(stack, f"v1/originals/{job_id}") == []
            assert len(_versions(stack, f"v1/outputs/{job_id}/")) >= 1
        for v in _versions(stack, "v1/"):
            if "Size" not in v:
                continue  # a delete marker: no body
            blob = stack.s3.get_object(Bucket=stack.bucket, Key=v["Key"], VersionId=v["VersionId"])
            data = blob["Body"].read()
            assert plaintext_hits(data, [astronaut_jpeg]) == [], v["Key"]
            assert SUBJECT.encode() not in data

        # another tenant's job does not exist, whatever is asked of it
        for path in (f"/v1/jobs/{jobs['alpha']}", f"/v1/jobs/{jobs['alpha']}/outputs/faces.json"):
            response = beta.get(path)
            assert response.status_code == 404, response.text
            assert response.json()["error"] == "not_found"
        assert alpha.get(f"/v1/jobs/{jobs['beta']}").status_code == 404

        erased = alpha.post("/v1/subjects/erase", json={"subject": SUBJECT})
        assert erased.status_code == 200, erased.text

        # alpha's job: every version of every object gone; its outputs unreadable over HTTP
        deadline = time.monotonic() + JOB_TIMEOUT
        while _versions(stack, f"v1/outputs/{jobs['alpha']}/"):
            assert time.monotonic() < deadline, "alpha's outputs were not erased"
            time.sleep(0.2)
        assert _versions(stack, f"v1/originals/{jobs['alpha']}") == []
        gone = alpha.get(f"/v1/jobs/{jobs['alpha']}/outputs/faces.json")
        assert gone.status_code == 404, gone.text
        # beta's subject of the same id is another subject: untouched
        assert len(_versions(stack, f"v1/outputs/{jobs['beta']}/")) >= 1
        kept = beta.get(f"/v1/jobs/{jobs['beta']}/outputs/faces.json")
        assert kept.status_code == 200, kept.text
        assert len(json.loads(kept.content)["faces"]) == 1
        # and alpha's job, erased or not, is still nothing to beta
        assert beta.get(f"/v1/jobs/{jobs['alpha']}").status_code == 404
        unknown = beta.post("/v1/subjects/erase", json={"subject": f"unseen-{SUBJECT}"})
        assert unknown.status_code == 404, unknown.text  # a subject beta never had

    # no subject id and no key in any log line of the server or the worker
    for log in (stack.server_log, stack.worker_log):
        text = log.read_bytes()
        assert SUBJECT.encode() not in text, log.name
        for key in stack.keys.values():
            assert key.encode() not in text, log.name
    assert b"/v1/jobs" in stack.server_log.read_bytes()  # the access log was scanned
    assert os.path.getsize(stack.worker_log) > 0


def test_a_revoked_key_is_refused_on_its_next_request(stack: Stack) -> None:
    """With Redis the server keeps a key's principal in memory (no ledger read per request):
    ``apikey revoke`` announces the revocation in Redis, and the very next request is 401."""
    import httpx

    key_id, key = _create_key_with_id(stack.settings, "gamma")
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=stack.url, headers=auth, timeout=30) as http:
        for _ in range(3):  # known and cached: an unknown job is 404, not 401
            assert http.get("/v1/jobs/no-such-job").status_code == 404
        done = subprocess.run(
            [FACEMEDIA, "apikey", "revoke", key_id, "--json"],
            env=settings_env(stack.settings),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        response = http.get("/v1/jobs/no-such-job")
        assert response.status_code == 401, response.text
        assert response.json()["error"] == "unauthorized"
        assert http.get("/v1/jobs/no-such-job").status_code == 401


def _create_key_with_id(settings: dict[str, Any], tenant: str) -> tuple[str, str]:
    """A key of ``tenant`` with every scope, made by the CLI: (key id, key)."""
    scopes = [arg for scope in SCOPES for arg in ("--scope", scope)]
    done = subprocess.run(
        [FACEMEDIA, "apikey", "create", "--tenant", tenant, *scopes, "--json"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)
    return str(created["key_id"]), str(created["key"])
