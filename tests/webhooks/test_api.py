"""Over real HTTP end to end: a job submitted to ``facemedia serve``'s app (real uvicorn, the
embedded default) with a ``callback_url`` is posted, signed, to a real receiver when it ends,
and ``GET /v1/jobs/{id}`` then shows the webhook delivered."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from tests.conftest import free_port
from tests.webhooks.conftest import Receiver
from worker.webhooks import HEADER, verify


def test_a_job_submitted_over_http_calls_back_signed(
    tmp_path: Path, receiver: Receiver, astronaut_jpeg: bytes
) -> None:
    import httpx
    import uvicorn

    from worker.api.app import create_app
    from worker.bootstrap import Container
    from worker.settings import load_settings

    container = Container(
        load_settings(home=tmp_path / "var", api={"callback_allow_hosts": ["127.0.0.1"]})
    )
    created = container.api_keys.create("acme", ["jobs:write", "jobs:read"])
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(container), host="127.0.0.1", port=port, log_config=None, access_log=False
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        receiver.reset()
        auth = {"Authorization": f"Bearer {created.key}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=auth, timeout=30) as http:
            answer = http.post(
                "/v1/jobs",
                files={"file": ("photo.jpg", astronaut_jpeg, "image/jpeg")},
                data={"job": "detect", "subject": "u-http", "callback_url": receiver.url("/api")},
            )
            assert answer.status_code == 202, answer.text
            job_id = answer.json()["job_id"]

            def delivered() -> dict[str, Any] | None:
                hook: dict[str, Any] | None = http.get(f"/v1/jobs/{job_id}").json()["webhook"]
                return hook if hook and hook["state"] == "delivered" else None

            deadline = time.monotonic() + 60
            while delivered() is None:
                assert time.monotonic() < deadline, http.get(f"/v1/jobs/{job_id}").json()
                time.sleep(0.1)
            assert delivered() == {"state": "delivered", "attempts": 1, "error": None}
            # a refused callback is refused at submission, before anything is stored
            refused = http.post(
                "/v1/jobs",
                files={"file": ("photo.jpg", astronaut_jpeg, "image/jpeg")},
                data={"job": "detect", "subject": "u-http", "callback_url": "http://10.0.0.1/x"},
            )
            assert (refused.status_code, refused.json()["error"]) == (422, "bad_callback_url")
        [hit] = receiver.hits("/api")
        assert verify(created.webhook_secret.encode(), hit.body, hit.headers[HEADER])
        doc = json.loads(hit.body)
        assert doc["job_id"] == job_id and doc["status"] == "succeeded"
        assert doc["original_deleted"] is True and b"u-http" not in hit.body
    finally:
        server.should_exit = True
        thread.join(15)
        container.close()
