"""``facemedia run`` with a broker (issue 18, *Long work shows progress* and *Dead ends* 4): when
no worker consumes the job's queue it says so after a few seconds and exits 3 when the wait
ends; a broker that cannot be reached exits 4. Real Redis (a database of its own, emptied after)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.conftest import Ran, on_a_terminal

pytestmark = pytest.mark.services

Fm = Callable[..., Ran]


@pytest.fixture
def empty_broker(redis_url: str) -> str:
    """A Redis database of this test's own, emptied before and after (the test leaves a job no
    worker took)."""
    return redis_url


def test_no_worker_is_named_and_the_wait_exits_3(fm: Fm, photo: Path, empty_broker: str) -> None:
    ran = fm(
        "run", str(photo), "--timeout", "6", "--json", env={"FACEMEDIA_BROKER_URL": empty_broker}
    )
    assert ran.code == 3, (ran.stdout, ran.stderr)
    status = ran.json()
    assert status["status"] == "queued" and not status["original_deleted"]
    assert "no worker consumes the 'media' queue" in ran.stderr


def test_an_unreachable_broker_exits_4(fm: Fm, photo: Path) -> None:
    ran = fm(
        "run",
        str(photo),
        "--json",
        env={"FACEMEDIA_BROKER_URL": "redis://127.0.0.1:1/0"},
        timeout=120,
    )
    assert ran.code == 4, (ran.stdout, ran.stderr)
    assert ran.json()["error"] == "unreachable"


def test_on_a_terminal_run_shows_the_job_status_while_it_waits(
    tmp_path: Path, photo: Path, empty_broker: str
) -> None:
    code, shown = on_a_terminal(
        tmp_path, ["run", str(photo), "--timeout", "4"], env={"FACEMEDIA_BROKER_URL": empty_broker}
    )
    assert code == 3, shown
    assert re.search(r"job [0-9a-f]{32}: queued \(\d+ s\)", shown), shown
    assert "no worker consumes the 'media' queue" in shown
