"""Webhook delivery over real HTTP: signed, retried, dead-lettered, never redirected, and
refused for inner addresses unless allow-listed (the SSRF guard at delivery time)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from tests.webhooks.conftest import Receiver
from worker.webhooks import HEADER, check_callback_url, verify
from worker.webhooks.delivery import WebhookConfig, WebhookService

ALLOW = ("127.0.0.1",)


@pytest.fixture(scope="module")
def key(ledger: Any) -> Any:
    return ledger.api_keys.create("default", ["jobs:write", "jobs:read"])


def service(ledger: Any, **config: Any) -> WebhookService:
    config = {"allow_hosts": ALLOW, "backoff_s": 0.05, "timeout_s": 2.0, **config}
    resolver = config.pop("resolver", socket.getaddrinfo)
    return WebhookService(
        ledger.db, ledger.api_keys.webhook_secret, WebhookConfig(**config), resolver=resolver
    )


def webhook(ledger: Any, job_id: str) -> dict[str, Any] | None:
    from worker.jobs.reads import job_status

    hook: dict[str, Any] | None = job_status(ledger.db, job_id)["webhook"]
    return hook


def callback_url(ledger: Any, job_id: str) -> str | None:
    from worker.ledger.models import Job

    with ledger.db.session() as s:
        url: str | None = s.get(Job, job_id).callback_url
        return url


def test_delivered_signed_summary_verifies_at_a_real_receiver(
    ledger: Any, key: Any, receiver: Receiver, make_job: Callable[..., str]
) -> None:
    receiver.reset(200)
    job_id = make_job(callback_url=receiver.url("/hook?tag=a"), api_key_id=key.key_id)
    # the transition that ended the job marked it pending (no extra transaction)
    assert webhook(ledger, job_id) == {"state": "pending", "attempts": 0, "error": None}

    step = service(ledger).attempt(job_id)

    assert (step.state, step.attempts, step.error, step.retry_in) == ("delivered", 1, None, None)
    [hit] = receiver.hits()
    assert hit.path == "/hook?tag=a"
    # the receiver's check, with the secret `apikey create` printed
    assert verify(key.webhook_secret.encode(), hit.body, hit.headers[HEADER])
    assert not verify(b"whsec_wrong", hit.body, hit.headers[HEADER])
    assert hit.headers["Content-Type"] == "application/json"
    assert hit.headers["X-Facemedia-Event"] == "job.ended"
    assert hit.headers["Host"] == f"127.0.0.1:{receiver.port}"
    doc = json.loads(hit.body)
    assert doc["job_id"] == job_id and doc["status"] == "failed"
    assert doc["error_code"] == "no_face" and "webhook" not in doc
    assert b"subject-u1" not in hit.body and "subject_id" not in doc
    assert webhook(ledger, job_id) == {"state": "delivered", "attempts": 1, "error": None}
    assert callback_url(ledger, job_id) is None  # delivered: the URL is forgotten

    # a redelivered message after the end sends nothing more
    again = service(ledger).attempt(job_id)
    assert (again.state, again.attempts) == ("delivered", 1)
    assert len(receiver.hits()) == 1


def test_a_500_is_retried_with_backoff_then_delivered(
    ledger: Any, key: Any, receiver: Receiver, make_job: Callable[..., str]
) -> None:
    receiver.reset(500, 200)
    job_id = make_job(callback_url=receiver.url(), api_key_id=key.key_id)
    svc = service(ledger, backoff_s=2.0, max_backoff_s=5.0)

    first = svc.attempt(job_id)
    assert (first.state, first.attempts, first.error) == ("pending", 1, "http_500")
    assert first.retry_in is not None and 1.6 <= first.retry_in <= 2.4
    assert webhook(ledger, job_id) == {"state": "pending", "attempts": 1, "error": "http_500"}
    assert callback_url(ledger, job_id) == receiver.url()  # kept while retries remain
    second = svc.attempt(job_id)
    assert (second.state, second.attempts, second.error) == ("delivered", 2, None)
    assert len(receiver.hits()) == 2
    # exponential (2 s, 4 s, ...) with ±20 % jitter, capped at max_backoff_s
    assert all(3.2 <= svc.backoff(2) <= 4.8 for _ in range(20))
    assert all(4.0 <= svc.backoff(n) <= 6.0 for n in (3, 9, 30) for _ in range(20))


def test_always_500_is_dead_after_max_attempts(
    ledger: Any, key: Any, receiver: Receiver, make_job: Callable[..., str]
) -> None:
    receiver.reset(*[500] * 10)
    job_id = make_job(callback_url=receiver.url(), api_key_id=key.key_id)
    svc = service(ledger, max_attempts=3)
    states = [svc.attempt(job_id) for _ in range(3)]
    assert [(s.state, s.attempts) for s in states] == [("pending", 1), ("pending", 2), ("dead", 3)]
    assert states[-1].retry_in is None and states[-1].error == "http_500"
    assert webhook(ledger, job_id) == {"state": "dead", "attempts": 3, "error": "http_500"}
    assert callback_url(ledger, job_id) is None
    # dead is final
    assert svc.attempt(job_id).state == "dead"
    assert len(receiver.hits()) == 3


def test_a_redirect_is_not_followed(
    ledger: Any, key: Any, receiver: Receiver, make_job: Callable[..., str]
) -> None:
    receiver.reset(("redirect", receiver.url("/elsewhere")))
    job_id = make_job(callback_url=receiver.url("/hook"), api_key_id=key.key_id)
    step = service(ledger).attempt(job_id)
    assert (step.state, step.error) == ("pending", "http_302")
    time.sleep(0.2)
    assert receiver.hits("/elsewhere") == [] and len(receiver.hits("/hook")) == 1


def test_refused_and_timeout_are_recorded_as_codes(
    ledger: Any, key: Any, receiver: Receiver, make_job: Callable[..., str]
) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    job_id = make_job(callback_url=f"http://127.0.0.1:{closed}/x", api_key_id=key.key_id)
    step = service(ledger).attempt(job_id)
    assert (step.state, step.error) == ("pending", "refused")

    receiver.reset(("sleep", 1.5))
    slow = make_job(callback_url=receiver.url(), api_key_id=key.key_id)
    started = time.monotonic()
    step = service(ledger, timeout_s=0.3).attempt(slow)
    assert (step.state, step.error) == ("pending", "timeout")
    assert time.monotonic() - started < 1.4


def test_an_inner_address_is_refused_at_delivery_without_the_allow_list(
    ledger: Any, key: Any, receiver: Receiver, make_job: Callable[..., str]
) -> None:
    receiver.reset()
    for url in (receiver.url(), receiver.url(host="localhost"), receiver.url(host="[::1]")):
        job_id = make_job(callback_url=url, api_key_id=key.key_id)
        step = service(ledger, allow_hosts=()).attempt(job_id)
        # retrying cannot help: dead at once
        assert (step.state, step.attempts, step.error) == ("dead", 1, "blocked_address"), url
    assert receiver.hits() == []


def _dns(answers: list[str]) -> Callable[..., Sequence[tuple[Any, ...]]]:
    """A resolver answering the next address of ``answers`` on each call (a rebinding DNS)."""

    def resolve(host: str, port: int, *_: Any) -> Sequence[tuple[Any, ...]]:
        a = answers.pop(0) if len(answers) > 1 else answers[0]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))]

    return resolve


def test_dns_rebinding_is_caught_at_delivery(
    ledger: Any, key: Any, receiver: Receiver, make_job: Callable[..., str]
) -> None:
    receiver.reset()
    url = f"http://hooks.rebind.test:{receiver.port}/hook"
    resolver = _dns(["93.184.216.34", "127.0.0.1"])
    assert check_callback_url(url, resolver=resolver) == url  # public at submission
    job_id = make_job(callback_url=url, api_key_id=key.key_id)
    step = service(ledger, allow_hosts=(), resolver=resolver).attempt(job_id)
    assert (step.state, step.error) == ("dead", "blocked_address")
    assert receiver.hits() == []


def test_the_connection_goes_to_the_checked_address_with_the_host_name(
    ledger: Any, key: Any, receiver: Receiver, make_job: Callable[..., str]
) -> None:
    receiver.reset()
    url = f"http://hooks.pinned.test:{receiver.port}/pinned"
    job_id = make_job(callback_url=url, api_key_id=key.key_id)
    svc = service(ledger, allow_hosts=("hooks.pinned.test",), resolver=_dns(["127.0.0.1"]))
    assert svc.attempt(job_id).state == "delivered"
    [hit] = receiver.hits()
    assert hit.path == "/pinned" and hit.headers["Host"] == f"hooks.pinned.test:{receiver.port}"


def test_jobs_without_a_callback_or_a_key_or_not_ended_get_nothing(
    ledger: Any, key: Any, receiver: Receiver, make_job: Callable[..., str], tiny_jpeg: bytes
) -> None:
    from worker.jobs.client import JobClient

    receiver.reset()
    no_url = make_job(callback_url=None, api_key_id=key.key_id)
    no_key = make_job(callback_url=receiver.url(), api_key_id=None)
    client = JobClient(
        ledger.db, ledger.records, ledger.subjects, lambda _: None, ledger.settings.max_upload_bytes
    )
    queued = client.submit(
        tiny_jpeg, "detect", {}, subject_id="u2", callback_url=receiver.url(), api_key_id=key.key_id
    )
    svc = service(ledger)
    for job_id in (no_url, no_key, queued, "0" * 32):
        assert svc.attempt(job_id).state is None
    assert webhook(ledger, no_url) is None and webhook(ledger, no_key) is None
    assert receiver.hits() == []


def test_an_unknown_key_is_dead_with_no_secret(
    ledger: Any, receiver: Receiver, make_job: Callable[..., str]
) -> None:
    receiver.reset()
    job_id = make_job(callback_url=receiver.url(), api_key_id="f" * 32)
    step = service(ledger).attempt(job_id)
    assert (step.state, step.error) == ("dead", "no_secret") and receiver.hits() == []


def test_inline_schedule_delivers_now_and_retries_on_a_timer(
    ledger: Any, key: Any, receiver: Receiver, make_job: Callable[..., str]
) -> None:
    """The embedded default: the container's service sends through the inline dispatcher."""
    from worker.dispatch.inline import InlineDispatcher

    receiver.reset(503, 200)
    job_id = make_job(callback_url=receiver.url(), api_key_id=key.key_id)
    svc = WebhookService(
        ledger.db,
        ledger.api_keys.webhook_secret,
        WebhookConfig(allow_hosts=ALLOW, backoff_s=0.1),
        send=InlineDispatcher(ledger).send,
    )
    # the inline handler reaches the container's own service: give it this policy
    ledger.__dict__["webhooks"] = svc
    try:
        svc.schedule(job_id)
        assert webhook(ledger, job_id) == {"state": "pending", "attempts": 1, "error": "http_503"}
        deadline = time.monotonic() + 10
        while (webhook(ledger, job_id) or {}).get("state") != "delivered":
            assert time.monotonic() < deadline, webhook(ledger, job_id)
            time.sleep(0.05)
        assert webhook(ledger, job_id) == {"state": "delivered", "attempts": 2, "error": None}
        assert len(receiver.hits()) == 2
    finally:
        del ledger.__dict__["webhooks"]


def test_schedule_never_raises(ledger: Any) -> None:
    def broken(*_: Any) -> None:
        raise ConnectionError("broker down")

    svc = WebhookService(ledger.db, ledger.api_keys.webhook_secret, WebhookConfig(), send=broken)
    svc.schedule("0" * 32)  # logged, not raised: the job's end stands


def test_rescue_resends_pending_deliveries_never_attempted(
    ledger: Any, key: Any, receiver: Receiver, make_job: Callable[..., str]
) -> None:
    """Beat's safety net: an end that scheduled nothing (or a lost message) is sent again."""
    receiver.reset(500)
    never = make_job(callback_url=receiver.url(), api_key_id=key.key_id)
    tried = make_job(callback_url=receiver.url(), api_key_id=key.key_id)
    keyless = make_job(callback_url=receiver.url(), api_key_id=None)
    assert service(ledger).attempt(tried).state == "pending"  # attempted: its retry is queued
    sent: list[tuple[str, list[Any], str]] = []
    svc = WebhookService(
        ledger.db,
        ledger.api_keys.webhook_secret,
        WebhookConfig(),
        send=lambda task, args, queue: sent.append((task, list(args), queue)),
    )
    assert svc.rescue(grace_s=3600) == 0  # within the grace period: its own message may wait
    svc.rescue(grace_s=0)
    rescued = {args[0] for _, args, _ in sent}
    assert never in rescued and tried not in rescued and keyless not in rescued
    assert {(task, queue) for task, _, queue in sent} == {
        ("facemedia.webhooks.deliver", "webhooks")
    }


def test_rescue_sends_an_expired_job_at_once(
    ledger: Any, key: Any, receiver: Receiver, make_job: Callable[..., str], tiny_jpeg: bytes
) -> None:
    """The sweep's expiry schedules no delivery: nothing but the rescue ever sends it, so it is
    sent with no grace (in the rescue after the sweep), while a job that ended elsewhere keeps
    its grace (its own message may wait); once attempted, an expired job's retry waits like any
    other's."""
    from datetime import UTC, datetime, timedelta

    from worker.jobs import lifecycle
    from worker.jobs.client import JobClient

    receiver.reset(500)
    client = JobClient(
        ledger.db, ledger.records, ledger.subjects, lambda _: None, ledger.settings.max_upload_bytes
    )
    expired = client.submit(
        tiny_jpeg,
        "detect",
        {},
        subject_id="subject-expired",
        callback_url=receiver.url("/expired"),
        api_key_id=key.key_id,
    )
    ended = make_job(callback_url=receiver.url(), api_key_id=key.key_id)
    now = datetime.now(UTC)
    with ledger.db.session() as s:
        assert lifecycle.expire(s, expired, created_before=now + timedelta(seconds=1), at=now)
    assert webhook(ledger, expired) == {"state": "pending", "attempts": 0, "error": None}
    sent: list[str] = []
    svc = WebhookService(
        ledger.db,
        ledger.api_keys.webhook_secret,
        WebhookConfig(),
        send=lambda task, args, queue: sent.append(args[0]),
    )
    time.sleep(0.01)  # the rescue's clock past the expiry's
    assert svc.rescue(grace_s=3600) >= 1
    assert expired in sent and ended not in sent
    assert service(ledger).attempt(expired).state == "pending"  # a 500: its retry is queued
    sent.clear()
    svc.rescue(grace_s=3600)
    assert expired not in sent


def test_rescue_resends_a_retry_whose_message_was_lost(
    ledger: Any, key: Any, receiver: Receiver, make_job: Callable[..., str]
) -> None:
    """An attempted delivery still pending past the latest moment its retry could have come
    (every backoff at its jitter's top, every attempt at its cut) lost its retry message: the
    rescue sends it again; one whose retry may still come is left alone."""
    from datetime import timedelta

    from worker.ledger.models import Job

    receiver.reset(500, 500, 500, 500)
    lost = make_job(callback_url=receiver.url(), api_key_id=key.key_id)
    waiting = make_job(callback_url=receiver.url(), api_key_id=key.key_id)
    for job_id in (lost, waiting):
        assert service(ledger).attempt(job_id).state == "pending"
        assert service(ledger).attempt(job_id).state == "pending"  # two attempts, two 500s
    sent: list[tuple[str, list[Any], str]] = []
    svc = WebhookService(
        ledger.db,
        ledger.api_keys.webhook_secret,
        WebhookConfig(),
        send=lambda task, args, queue: sent.append((task, list(args), queue)),
    )
    overdue = svc.overdue_after(2)  # 10 s cuts x3, backoffs 30 s and 60 s at +20 %
    assert overdue == 2 * 30.0 + 1.2 * 30.0 + 1.2 * 60.0
    with ledger.db.session() as s:
        row = s.get(Job, lost)
        assert row is not None and row.finished_at is not None
        row.finished_at -= timedelta(seconds=overdue + 5)
    svc.rescue(grace_s=0)  # (other tests' never-attempted jobs share this ledger)
    rescued = {args[0] for _, args, _ in sent}
    assert lost in rescued and waiting not in rescued


def test_facemedia_status_shows_the_webhook(
    ledger: Any,
    key: Any,
    receiver: Receiver,
    make_job: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    from worker.bootstrap import set_container
    from worker.cli.jobs import status

    receiver.reset(500)
    job_id = make_job(callback_url=receiver.url(), api_key_id=key.key_id)
    service(ledger).attempt(job_id)
    set_container(ledger)
    capsys.readouterr()  # the submission's and attempt's log lines
    try:
        status(job_id, as_json=True)
        doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert doc["webhook"] == {"state": "pending", "attempts": 1, "error": "http_500"}
        status(job_id, as_json=False)
        assert "pending after 1 attempt(s) (http_500)" in capsys.readouterr().out
    finally:
        set_container(None)


def test_a_dripping_answer_is_cut_at_the_total_deadline(
    ledger: Any, key: Any, make_job: Callable[..., str]
) -> None:
    """Each byte arrives within the socket timeout; the exchange as a whole does not."""
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    stop = threading.Event()

    def drip() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            while not stop.is_set():
                try:
                    conn.sendall(b"a")
                except OSError:
                    return
                time.sleep(0.1)

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    try:
        job_id = make_job(callback_url=f"http://127.0.0.1:{port}/x", api_key_id=key.key_id)
        started = time.monotonic()
        step = service(ledger, timeout_s=0.4).attempt(job_id)
        elapsed = time.monotonic() - started
        assert (step.state, step.error) == ("pending", "timeout")
        assert 1.0 <= elapsed < 3.0, elapsed  # 3 x 0.4 s, not as long as the server likes
    finally:
        stop.set()
        server.close()
        thread.join(5)


def test_a_job_cancelled_by_an_erasure_is_posted_by_the_rescue(
    ledger: Any, key: Any, receiver: Receiver, tiny_jpeg: bytes
) -> None:
    """An end that does not pass through the job service (here an erasure cancels a queued
    job) leaves the webhook pending; beat's rescue sends it."""
    from worker.jobs.client import JobClient

    receiver.reset()
    client = JobClient(
        ledger.db, ledger.records, ledger.subjects, lambda _: None, ledger.settings.max_upload_bytes
    )
    job_id = client.submit(
        tiny_jpeg,
        "detect",
        {},
        subject_id="subject-erased",
        callback_url=receiver.url("/erased"),
        api_key_id=key.key_id,
    )
    ref = client.subject_ref("subject-erased")
    assert ref is not None
    ledger.rights.erase(ref)
    assert webhook(ledger, job_id) == {"state": "pending", "attempts": 0, "error": None}

    svc = service(ledger)

    def send_now(task: str, args: Sequence[Any], queue: str) -> None:
        svc.attempt(args[0])

    svc.send = send_now
    assert svc.rescue(grace_s=0) >= 1
    assert webhook(ledger, job_id) == {"state": "delivered", "attempts": 1, "error": None}
    [hit] = receiver.hits("/erased")
    doc = json.loads(hit.body)
    assert (doc["status"], doc["error_code"]) == ("failed", "subject_erased")
    assert verify(key.webhook_secret.encode(), hit.body, hit.headers[HEADER])
