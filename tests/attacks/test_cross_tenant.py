"""Attack (issue 17): a caller holding tenant B's API key goes after tenant A's data over real
HTTP, against a real `facemedia serve` on the embedded default. B knows A's job id (leaked in a
log, guessed from a URL) and A's upstream subject id (the same user at both customers). None of
it reaches A: A's job and its output answer 404 exactly like an unknown job, and B's erasure,
consent withdrawal and export of the same upstream id act on B's own namespace (nothing of
A's), after which A's output still decrypts for A."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.serving import facemedia_serve
from tests.workers import settings_env

SUBJECT = "shared-user-0815"
ALL = ["jobs:write", "jobs:read", "subjects:manage"]


def _wait_ended(http: Any, job: str, auth: dict[str, str]) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + 90
    while True:
        status = http.get(f"/v1/jobs/{job}", headers=auth).json()
        if status["status"] not in ("queued", "processing"):
            return dict(status)
        assert time.monotonic() < deadline, status
        time.sleep(0.3)


def test_tenant_b_cannot_read_or_erase_tenant_a(tmp_path: Path, astronaut_jpeg: bytes) -> None:
    import httpx

    from worker.bootstrap import Container
    from worker.settings import load_settings

    home = tmp_path / "var"
    container = Container(load_settings(home=home, broker_url="", database_url="", store_url=""))
    key_a = container.api_keys.create("tenant-a", ALL).key
    key_b = container.api_keys.create("tenant-b", ALL).key
    container.close()
    a = {"Authorization": f"Bearer {key_a}"}
    b = {"Authorization": f"Bearer {key_b}"}
    with (
        facemedia_serve(settings_env({"home": home}), tmp_path / "serve.log") as served,
        httpx.Client(base_url=served.url, timeout=60) as http,
    ):
        form = {"job": "detect", "subject": SUBJECT}
        posted = http.post("/v1/jobs", headers=a, data=form, files={"file": astronaut_jpeg})
        assert posted.status_code == 202, posted.text
        job = posted.json()["job_id"]
        assert _wait_ended(http, job, a)["status"] == "succeeded"
        output = http.get(f"/v1/jobs/{job}/outputs/faces.json", headers=a)
        assert output.status_code == 200 and b'"faces"' in output.content

        unknown = http.get("/v1/jobs/" + "0" * 32, headers=b)
        for path in (f"/v1/jobs/{job}", f"/v1/jobs/{job}/outputs/faces.json"):
            stolen = http.get(path, headers=b)
            assert stolen.status_code == 404 and stolen.json()["error"] == unknown.json()["error"]
            assert b'"faces"' not in stolen.content
        body = {"subject": SUBJECT}
        for path in ("/v1/subjects/export", "/v1/subjects/consent/withdraw"):
            answer = http.post(path, headers=b, json=body)
            assert answer.status_code == 404, (path, answer.status_code, answer.text[:200])
        assert http.post("/v1/subjects/erase", headers=b, json=body).status_code == 404

        # A's job, output and subject are untouched
        assert _wait_ended(http, job, a)["status"] == "succeeded"
        again = http.get(f"/v1/jobs/{job}/outputs/faces.json", headers=a)
        assert again.status_code == 200 and again.content == output.content
        export = http.post("/v1/subjects/export", headers=a, json=body)
        assert export.status_code == 200 and export.content[:2] == b"PK"
