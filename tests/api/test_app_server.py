"""The HTTP API over real HTTP: a real uvicorn server (in a thread of this process) on the
embedded default (SQLite ledger, local store, jobs on the server's background thread), driven
with httpx. Two tenants (``acme`` and ``globex``) submit, read, fetch and exercise subjects'
rights; every error code is provoked; uploads stream (413 mid-stream, 503 busy) and no temp
directory or store file ever holds the upload's bytes.

One server for the module (its limits are set low to provoke the errors cheaply).
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port

MAX_UPLOAD = 2 * 1024 * 1024
BOUNDARY = "facemediatestboundary0123456789"
SCOPES = ("jobs:write", "jobs:read", "subjects:manage")


@dataclass(frozen=True)
class Server:
    """The running server: its URL, the app state, the keys by name and the home directory."""

    url: str
    state: Any
    keys: dict[str, str]
    key_ids: dict[str, str]
    home: Path


class _Records(logging.Handler):
    """Every log record any logger emits while the server runs (formatted)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith(("httpx", "httpcore")):  # the test's client, not the server
            self.lines.append(record.getMessage())


LOG = _Records()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    import uvicorn

    from worker.api.app import create_app
    from worker.bootstrap import Container
    from worker.settings import load_settings

    home = tmp_path_factory.mktemp("api") / "var"
    settings = load_settings(
        home=home,
        broker_url="",
        database_url="",
        store_url="",
        max_upload_bytes=MAX_UPLOAD,
        api={"max_concurrent_uploads": 1, "request_timeout_s": 30.0, "callback_allow_hosts": []},
    )
    container = Container(settings)
    keys: dict[str, str] = {}
    key_ids: dict[str, str] = {}
    for name, tenant, scopes, limits in (
        ("acme", "acme", SCOPES, {}),
        ("globex", "globex", SCOPES, {}),
        ("reader", "acme", ("jobs:read",), {}),
        ("slow", "acme", ("jobs:read",), {"rate_per_second": 0.2, "burst": 2}),
        ("revoked", "acme", SCOPES, {}),
    ):
        created = container.api_keys.create(tenant, scopes, **limits)
        keys[name], key_ids[name] = created.key, created.key_id
    container.api_keys.revoke(key_ids["revoked"])
    app = create_app(container)
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"
    )
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    root = logging.getLogger()
    root.addHandler(LOG)
    old_level = root.level
    root.setLevel(logging.INFO)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield Server(f"http://127.0.0.1:{port}", app.state.api, keys, key_ids, home)
    finally:
        uv.should_exit = True
        thread.join(15)
        root.removeHandler(LOG)
        root.setLevel(old_level)
        container.close()


def _auth(server: Server, name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.keys[name]}"}


def _client(server: Server) -> Any:
    import httpx

    return httpx.Client(base_url=server.url, timeout=30)


def _form(fields: list[tuple[str, str]], media: bytes | None = None) -> bytes:
    """A multipart/form-data body: ``fields`` in order, then ``file`` (if any)."""
    out = io.BytesIO()
    for name, value in fields:
        out.write(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        out.write(value.encode() + b"\r\n")
    if media is not None:
        out.write(_file_head() + media + b"\r\n")
    out.write(f"--{BOUNDARY}--\r\n".encode())
    return out.getvalue()


def _file_head() -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="me.jpg"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()


FORM = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def _submit(server: Server, key: str, media: bytes, subject: str, **extra: str) -> Any:
    with _client(server) as http:
        return http.post(
            "/v1/jobs",
            headers={**_auth(server, key), **FORM, **extra},
            content=_form([("job", "detect"), ("subject", subject)], media),
        )


def _wait(server: Server, key: str, job_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with _client(server) as http:
        while True:
            got = http.get(f"/v1/jobs/{job_id}", headers=_auth(server, key))
            assert got.status_code == 200, got.text
            body: dict[str, Any] = got.json()
            if body["status"] not in ("queued", "processing"):
                return body
            assert time.monotonic() < deadline, body
            time.sleep(0.1)


def _error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    body: dict[str, Any] = response.json()
    assert body["error"] == code and body["message"], body
    return body


# ----- the happy path, two tenants -------------------------------------------------------------


@pytest.fixture(scope="module")
def acme_job(server: Server, astronaut_jpeg: bytes) -> str:
    """A detect job of tenant acme for subject ``u1``, run to its end."""
    response = _submit(server, "acme", astronaut_jpeg, "u1")
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "queued"
    assert response.headers["location"] == f"/v1/jobs/{body['job_id']}"
    assert _wait(server, "acme", body["job_id"])["status"] == "succeeded"
    return str(body["job_id"])


def test_health_ready_and_openapi(server: Server) -> None:
    from worker.api.openapi import document

    with _client(server) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        ready = http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"]["ledger"] == "ok"
        assert ready.json()["checks"]["store"] == "ok"
        served = http.get("/openapi.json").json()
    committed = json.loads((Path(__file__).parents[2] / "docs" / "openapi.json").read_text())
    assert served == committed == json.loads(json.dumps(document()))
    _error(_client(server).get("/v1/nothing"), 404, "not_found")


def test_submit_status_output_across_tenants(server: Server, acme_job: str) -> None:
    from sqlalchemy import select

    from worker.ledger.models import AuditEntry

    status = _wait(server, "acme", acme_job)
    assert status["job_id"] == acme_job and status["original_deleted"] is True
    assert status["outputs"] == ["faces.json"] and status["faces"] == 1
    assert status["duration_s"] is not None and status["created_at"] is not None
    with _client(server) as http:
        out = http.get(f"/v1/jobs/{acme_job}/outputs/faces.json", headers=_auth(server, "acme"))
        assert out.status_code == 200
        assert out.headers["content-type"].startswith("application/json")
        assert json.loads(out.content)["faces"]
        # another tenant: exactly as if the job did not exist
        _error(http.get(f"/v1/jobs/{acme_job}", headers=_auth(server, "globex")), 404, "not_found")
        unknown = http.get("/v1/jobs/" + "0" * 32, headers=_auth(server, "globex"))
        assert unknown.json() == _error(
            http.get(f"/v1/jobs/{acme_job}/outputs/faces.json", headers=_auth(server, "globex")),
            404,
            "not_found",
        )
        _error(
            http.get(f"/v1/jobs/{acme_job}/outputs/nope.json", headers=_auth(server, "acme")),
            404,
            "not_found",
        )
        # a read-only key of the same tenant reads, but may not submit
        assert http.get(f"/v1/jobs/{acme_job}", headers=_auth(server, "reader")).status_code == 200
    _error(_submit(server, "reader", b"x", "u1"), 403, "forbidden")
    with server.state.container.db.session() as s:
        reads = list(s.scalars(select(AuditEntry).where(AuditEntry.event == "api.output_read")))
    assert reads and reads[0].entity == acme_job and reads[0].tenant == "acme"
    details = json.dumps(reads[0].details)
    assert server.key_ids["acme"] in details and server.keys["acme"] not in details


def test_put_raw_and_idempotency(server: Server, astronaut_jpeg: bytes) -> None:
    headers = {
        **_auth(server, "globex"),
        "Facemedia-Job": "detect",
        "Facemedia-Subject": "u1",
        "Facemedia-Attr": "age=34",
        "Idempotency-Key": "order-17",
    }
    with _client(server) as http:
        first = http.put("/v1/jobs", headers=headers, content=astronaut_jpeg)
        assert first.status_code == 202, first.text
        again = http.put("/v1/jobs", headers=headers, content=astronaut_jpeg)
        assert again.status_code == 202 and again.json()["job_id"] == first.json()["job_id"]
        # answered before the body is read, even a body larger than the socket buffers (the
        # server discards up to 16 MiB of it so that the client reads the answer)
        big = http.put("/v1/jobs", headers=headers, content=astronaut_jpeg + os.urandom(3 << 20))
        assert big.status_code == 202 and big.json()["job_id"] == first.json()["job_id"]
        # the same key in another tenant is another job
        other = http.post(
            "/v1/jobs",
            headers={**_auth(server, "acme"), **FORM, "Idempotency-Key": "order-17"},
            content=_form([("job", "detect"), ("subject", "u1")], astronaut_jpeg),
        )
        assert other.status_code == 202 and other.json()["job_id"] != first.json()["job_id"]
    assert _wait(server, "globex", first.json()["job_id"])["status"] == "succeeded"
    assert _wait(server, "acme", other.json()["job_id"])["status"] == "succeeded"


def test_subject_rights_with_two_tenants(server: Server, acme_job: str) -> None:
    acme, globex = _auth(server, "acme"), _auth(server, "globex")
    body = {"subject": "u1"}
    with _client(server) as http:
        exported = http.post("/v1/subjects/export", headers=acme, json=body)
        assert exported.status_code == 200 and exported.headers["content-type"] == "application/zip"
        archive = zipfile.ZipFile(io.BytesIO(exported.content))
        names = archive.namelist()
        assert names[0] == "report.json" and f"output/{acme_job}/faces.json" in names
        report = json.loads(archive.read("report.json"))
        assert acme_job in {j["id"] for j in report["jobs"]}
        # globex's u1 is another subject: its export never shows acme's job
        theirs = http.post("/v1/subjects/export", headers=globex, json=body)
        if theirs.status_code == 200:
            assert (
                acme_job
                not in zipfile.ZipFile(io.BytesIO(theirs.content)).read("report.json").decode()
            )
        _error(
            http.post("/v1/subjects/erase", headers=globex, json={"subject": "nobody"}),
            404,
            "not_found",
        )
        held = http.post("/v1/subjects/hold", headers=acme, json={**body, "reason": "litigation"})
        assert held.json() == {"held": True, "reason": "litigation", "note": False}
        _error(
            http.post("/v1/subjects/hold", headers=acme, json={**body, "reason": "because"}),
            422,
            "bad_params",
        )
        released = http.post("/v1/subjects/hold/release", headers=acme, json=body)
        assert released.json()["held"] is False
        withdrawn = http.post("/v1/subjects/consent/withdraw", headers=acme, json=body)
        assert withdrawn.status_code == 200 and withdrawn.json()["action"] == "withdraw_consent"
        _error(
            http.post("/v1/subjects/erase", headers=acme, content=b"u1"), 415, "unsupported_media"
        )
        _error(
            http.post("/v1/subjects/erase", headers=acme, json={"subject": "u1", "x": 1}),
            422,
            "bad_params",
        )
        _error(
            http.post("/v1/subjects/erase", headers=_auth(server, "reader"), json=body),
            403,
            "forbidden",
        )
        erased = http.post("/v1/subjects/erase", headers=acme, json=body)
        assert erased.status_code == 200 and erased.json()["subject_erased"] is True
        assert "subject" not in erased.json()
        # acme's job outputs are gone; globex's u1 is untouched
        assert _wait(server, "acme", acme_job)["outputs"] == []
        _error(http.get(f"/v1/jobs/{acme_job}/outputs/faces.json", headers=acme), 404, "not_found")


# ----- errors --------------------------------------------------------------------------------


def test_auth_errors(server: Server) -> None:
    with _client(server) as http:
        _error(http.get("/v1/jobs/" + "0" * 32), 401, "unauthorized")
        _error(
            http.get("/v1/jobs/x", headers={"Authorization": "Bearer fmk_nope"}),
            401,
            "unauthorized",
        )
        _error(http.get("/v1/jobs/x", headers=_auth(server, "revoked")), 401, "unauthorized")
        _error(http.get("/v1/jobs/x", headers={"Authorization": "Basic abc"}), 401, "unauthorized")


def test_rate_limit(server: Server) -> None:
    with _client(server) as http:
        seen = [http.get("/v1/jobs/" + "0" * 32, headers=_auth(server, "slow")) for _ in range(3)]
    assert [r.status_code for r in seen[:2]] == [404, 404]
    _error(seen[2], 429, "rate_limited")
    assert int(seen[2].headers["retry-after"]) >= 1


def test_submit_refusals(server: Server, astronaut_jpeg: bytes) -> None:
    acme = {**_auth(server, "acme"), **FORM}
    with _client(server) as http:

        def post(fields: list[tuple[str, str]], media: bytes | None = astronaut_jpeg) -> Any:
            return http.post("/v1/jobs", headers=acme, content=_form(fields, media))

        _error(
            post([("job", "detect"), ("subject", "u9")], b"%PDF-1.7 not media"),
            415,
            "unsupported_media",
        )
        _error(post([("job", "nope"), ("subject", "u9")]), 422, "bad_params")
        _error(post([("job", "detect")]), 422, "bad_params")
        _error(post([("job", "detect"), ("subject", "u9"), ("params", "{bad")]), 422, "bad_params")
        _error(post([("job", "detect"), ("subject", "u9"), ("params", "[1]")]), 422, "bad_params")
        _error(post([("job", "detect"), ("subject", "u9"), ("attr", "shoe=42")]), 422, "bad_params")
        _error(
            post([("job", "detect"), ("subject", "u9"), ("minor", "perhaps")]), 422, "bad_params"
        )
        _error(post([("job", "detect"), ("subject", "u9"), ("colour", "red")]), 422, "bad_params")
        _error(post([("job", "detect"), ("subject", "u9")], None), 422, "bad_params")
        _error(
            post([("job", "detect"), ("subject", "u9"), ("callback_url", "http://127.0.0.1/x")]),
            422,
            "bad_callback_url",
        )
        # a field after the file
        late = _form([("job", "detect")], astronaut_jpeg).replace(
            f"--{BOUNDARY}--".encode(),
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="subject"\r\n\r\nu9\r\n'
            f"--{BOUNDARY}--".encode(),
        )
        _error(http.post("/v1/jobs", headers=acme, content=late), 422, "bad_params")
        _error(
            http.post(
                "/v1/jobs",
                headers={**_auth(server, "acme"), "Content-Type": "image/jpeg"},
                content=astronaut_jpeg,
            ),
            415,
            "unsupported_media",
        )
        _error(
            http.put(
                "/v1/jobs",
                headers={**_auth(server, "acme"), "Facemedia-Job": "detect"},
                content=astronaut_jpeg,
            ),
            422,
            "bad_params",
        )
        _error(
            http.post("/v1/jobs", headers={**acme, "Idempotency-Key": "x" * 200}, content=b""),
            422,
            "bad_params",
        )
        _error(http.post("/v1/jobs", headers=acme, content=b"garbage" * 10), 400, "bad_request")
        _error(http.delete("/v1/jobs", headers=acme), 405, "method_not_allowed")


def _originals(server: Server) -> set[str]:
    server.state.runner.wait_idle(30)
    return set(server.state.container.store.keys("originals/"))


def test_too_large_is_refused_while_streaming(server: Server, astronaut_jpeg: bytes) -> None:
    before = _originals(server)
    sent = {"bytes": 0}

    def body() -> Iterator[bytes]:  # chunked: no Content-Length, the server must count
        head = _form([("job", "detect"), ("subject", "big")])[: -len(f"--{BOUNDARY}--\r\n")]
        yield head + _file_head() + astronaut_jpeg
        chunk = os.urandom(256 * 1024)
        for _ in range(MAX_UPLOAD // len(chunk) + 4):
            sent["bytes"] += len(chunk)
            yield chunk
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    with _client(server) as http:
        response = http.post("/v1/jobs", headers={**_auth(server, "acme"), **FORM}, content=body())
        _error(response, 413, "too_large")
        # declared too large: refused before the body is read
        declared = http.put(
            "/v1/jobs",
            headers={
                **_auth(server, "acme"),
                "Facemedia-Job": "detect",
                "Facemedia-Subject": "big",
            },
            content=astronaut_jpeg + bytes(MAX_UPLOAD),
        )
        _error(declared, 413, "too_large")
    assert _originals(server) == before  # the partial original was removed
    with server.state.container.db.session() as s:
        from sqlalchemy import select

        from worker.ledger.models import Job

        failed = list(s.scalars(select(Job).where(Job.error_code == "too_large")))
    assert failed and all(j.status == "failed" and j.original_deleted_at for j in failed)


def _scan(roots: list[Path], needles: list[bytes], since: float) -> list[str]:
    """Files under ``roots`` changed since ``since`` that hold any of ``needles``."""
    hits = []
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                path = Path(dirpath) / name
                try:
                    st = path.stat()
                    if st.st_mtime < since or st.st_size > 64 * 1024 * 1024 or not path.is_file():
                        continue
                    blob = path.read_bytes()
                except OSError:
                    continue
                if any(n in blob for n in needles):
                    hits.append(str(path))
    return hits


def test_upload_never_touches_disk_and_busy(server: Server, astronaut_jpeg: bytes) -> None:
    import httpx

    tail = os.urandom(1024 * 1024)
    media = astronaut_jpeg + tail
    needles = [tail[i : i + 32] for i in range(0, len(tail) - 32, len(tail) // 16)]
    roots = [Path(tempfile.gettempdir()), server.home]
    since = time.time() - 1
    during: dict[str, Any] = {}

    def body() -> Iterator[bytes]:
        head = _form([("job", "detect"), ("subject", "disk")])[: -len(f"--{BOUNDARY}--\r\n")]
        yield head + _file_head() + media[: len(media) // 2]
        time.sleep(0.3)  # the server holds the first half somewhere: look for it everywhere
        during["hits"] = _scan(roots, needles, since)
        # one upload at a time (max_concurrent_uploads = 1): a second is told the server is busy
        with httpx.Client(base_url=server.url, timeout=10) as other:
            during["busy"] = other.put(
                "/v1/jobs",
                headers={
                    **_auth(server, "globex"),
                    "Facemedia-Job": "detect",
                    "Facemedia-Subject": "x",
                },
                content=astronaut_jpeg,
            )
        yield media[len(media) // 2 :] + f"\r\n--{BOUNDARY}--\r\n".encode()

    with _client(server) as http:
        response = http.post("/v1/jobs", headers={**_auth(server, "acme"), **FORM}, content=body())
    assert response.status_code == 202, response.text
    assert during["hits"] == []
    _error(during["busy"], 503, "busy")
    assert during["busy"].headers["retry-after"] == "1"
    _wait(server, "acme", response.json()["job_id"])
    assert _scan(roots, needles, since) == []


def test_access_log_carries_no_subject_and_no_header_value(
    server: Server, astronaut_jpeg: bytes
) -> None:
    subject = "subject-in-a-log-canary-4711"
    start = len(LOG.lines)
    with _client(server) as http:
        http.put(
            "/v1/jobs?note=querystring-canary",
            headers={
                **_auth(server, "globex"),
                "Facemedia-Job": "detect",
                "Facemedia-Subject": subject,
            },
            content=astronaut_jpeg,
        )
        http.post("/v1/subjects/export", headers=_auth(server, "globex"), json={"subject": subject})
        http.post("/v1/subjects/erase", headers=_auth(server, "globex"), json={"subject": subject})
    server.state.runner.wait_idle(30)
    lines = LOG.lines[start:]
    access = [line for line in lines if line.startswith(("PUT ", "POST "))]
    assert any(line.startswith("PUT /v1/jobs 202") for line in access), lines
    assert any(line.startswith("POST /v1/subjects/erase 200") for line in access), lines
    text = "\n".join(lines)
    assert subject not in text
    assert "querystring-canary" not in text
    assert server.keys["globex"] not in text and "Bearer" not in text


def test_a_pending_erasure_refuses_new_jobs(server: Server, astronaut_jpeg: bytes) -> None:
    globex = _auth(server, "globex")
    first = _submit(server, "globex", astronaut_jpeg, "held-1")
    assert first.status_code == 202
    _wait(server, "globex", first.json()["job_id"])
    body = {"subject": "held-1"}
    with _client(server) as http:
        assert http.post(
            "/v1/subjects/hold", headers=globex, json={**body, "reason": "court_order"}
        ).json()["held"]
        erased = http.post("/v1/subjects/erase", headers=globex, json=body).json()
        assert erased["pending"] is True and erased["held"] >= 1
    _error(_submit(server, "globex", astronaut_jpeg, "held-1"), 409, "subject_erased")
    with _client(server) as http:
        assert (
            http.post("/v1/subjects/hold/release", headers=globex, json=body).json()["held"]
            is False
        )
