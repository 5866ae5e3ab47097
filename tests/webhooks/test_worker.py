"""Through real processes: a job processed by a ``celery worker`` on Redis with PostgreSQL ends,
its webhook is sent on the ``webhooks`` queue, answered 500, retried by Celery with a countdown,
then delivered and verified by the receiver. And the same end-to-end on the embedded default."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.webhooks.conftest import Receiver
from tests.workers import celery_worker, wait_for
from worker.webhooks import HEADER, verify


def test_a_processed_job_is_delivered_through_celery_after_a_retry(
    redis_url: str, pg_url: str, tmp_path: Path, receiver: Receiver, astronaut_jpeg: bytes
) -> None:
    from worker.bootstrap import Container
    from worker.dispatch import names
    from worker.jobs.reads import job_status
    from worker.settings import load_settings

    base: dict[str, Any] = {
        "home": tmp_path / "var",
        "broker_url": redis_url,
        "database_url": pg_url,
    }
    api = {"callback_allow_hosts": ["127.0.0.1"], "webhook_backoff_s": 1.0}
    container = Container(load_settings(**base, api=api))
    worker_env = base | {f"api__{k}": v for k, v in api.items()}
    try:
        key = container.api_keys.create("default", ["jobs:write"])
        receiver.reset(500, 200)
        job_id = container.client.submit(
            astronaut_jpeg,
            "detect",
            {},
            subject_id="subject-celery",
            callback_url=receiver.url("/celery"),
            api_key_id=key.key_id,
        )
        assert container.dispatcher.remote

        def hook() -> dict[str, Any]:
            return dict(job_status(container.db, job_id)["webhook"] or {})

        log = tmp_path / "worker.log"
        queues = f"{names.MEDIA},{names.WEBHOOKS}"
        with celery_worker(worker_env, log, queues=queues, concurrency=1):
            assert wait_for(lambda: hook().get("state") == "delivered", 90), (
                hook(),
                log.read_text()[-3000:],
            )
        assert hook() == {"state": "delivered", "attempts": 2, "error": None}
        first, second = receiver.hits("/celery")
        assert verify(key.webhook_secret.encode(), second.body, second.headers[HEADER])
        assert [first.headers["X-Facemedia-Attempt"], second.headers["X-Facemedia-Attempt"]] == [
            "1",
            "2",
        ]
        # Celery's countdown (1 s ± 20 %) separated the attempts
        assert second.at - first.at >= 0.75, second.at - first.at
        doc = json.loads(second.body)
        assert doc["job_id"] == job_id and doc["status"] == "succeeded" and doc["faces"] == 1
        assert doc["original_deleted"] is True and doc["outputs"]
        assert b"subject-celery" not in second.body
    finally:
        container.close()


def test_embedded_default_delivers_when_the_job_ends(
    make_settings: Any, receiver: Receiver, astronaut_jpeg: bytes
) -> None:
    """No broker: the job runs inline, and its end posts the webhook right there."""
    from worker.bootstrap import Container
    from worker.jobs.reads import job_status

    container = Container(make_settings(api={"callback_allow_hosts": ["127.0.0.1"]}))
    try:
        key = container.api_keys.create("default", ["jobs:write"])
        receiver.reset()
        job_id = container.client.submit(
            astronaut_jpeg,
            "detect",
            {},
            subject_id="subject-inline",
            callback_url=receiver.url("/inline"),
            api_key_id=key.key_id,
        )
        assert job_status(container.db, job_id)["webhook"] == {
            "state": "delivered",
            "attempts": 1,
            "error": None,
        }
        [hit] = receiver.hits("/inline")
        assert verify(key.webhook_secret.encode(), hit.body, hit.headers[HEADER])
        doc = json.loads(hit.body)
        assert doc["status"] == "succeeded" and doc["original_deleted"] is True
    finally:
        container.close()
