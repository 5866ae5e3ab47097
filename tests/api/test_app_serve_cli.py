"""``facemedia serve --workers 2`` as a user starts it: a real subprocess (uvicorn with the
import-string factory, one container per worker process) on a fresh embedded home. Its log holds
our access line (method, path, status) and never a query string, a subject id, a key or the
client's address (uvicorn's own access line is off); at the end the audit log's head is under a
signed checkpoint."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from tests.serving import FACEMEDIA, ROOT, facemedia_serve
from tests.workers import settings_env


def test_serve_with_two_workers_logs_no_personal_data(
    tmp_path: Path, astronaut_jpeg: bytes
) -> None:
    import httpx

    from worker.bootstrap import Container
    from worker.settings import load_settings

    home = tmp_path / "var"
    container = Container(load_settings(home=home, broker_url="", database_url="", store_url=""))
    key = container.api_keys.create("acme", ["jobs:write", "jobs:read"]).key
    container.close()
    log = tmp_path / "serve.log"
    env = settings_env({"home": home, "log_level": "INFO"})
    subject = "serve-cli-subject-canary-0815"
    with facemedia_serve(env, log, workers=2, ready_s=45) as served:
        url, port = served.url, served.port
        with httpx.Client(base_url=url, timeout=30) as http:
            headers = {
                "Authorization": f"Bearer {key}",
                "Facemedia-Job": "detect",
                "Facemedia-Subject": subject,
            }
            put = http.put("/v1/jobs?trace=query-canary", headers=headers, content=astronaut_jpeg)
            assert put.status_code == 202, put.text
            job = put.json()["job_id"]
            status = http.get(f"/v1/jobs/{job}", headers={"Authorization": f"Bearer {key}"})
            assert status.status_code == 200 and status.json()["job_id"] == job
            # let the job end before the server stops (a loaded machine takes seconds to load
            # the detector; a stop mid-job waits for it and the test must not kill that wait)
            done_by = time.monotonic() + 90
            while status.json()["status"] in ("queued", "processing"):
                assert time.monotonic() < done_by, status.json()
                time.sleep(0.3)
                status = http.get(f"/v1/jobs/{job}", headers={"Authorization": f"Bearer {key}"})
            assert status.json()["status"] == "succeeded", status.json()
    # the requests' audit entries (submission, job run) end under a signed checkpoint
    verified = subprocess.run(
        [FACEMEDIA, "audit", "verify", "--json"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    report = json.loads(verified.stdout)
    assert report["ok"] and report["checkpoint_seq"] == report["head_seq"], report
    text = log.read_text()
    assert "PUT /v1/jobs 202" in text and f"GET /v1/jobs/{job} 200" in text, text[-3000:]
    assert subject not in text and "query-canary" not in text
    assert key not in text and "127.0.0.1:" not in text.replace(f"127.0.0.1:{port}", "")
