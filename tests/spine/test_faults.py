"""Transient storage faults are retried with backoff; spent retries fail the job and clean up."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

import pytest

from worker.storage.base import DeleteResult, ObjectStore, StoreEntry, StoreInfo
from worker.storage.errors import TransientStorageError


class FlakyStore(ObjectStore):
    """Wraps a real store; the first ``failures`` calls of ``op`` raise a transient fault."""

    def __init__(self, inner: ObjectStore, op: str, failures: int) -> None:
        self.inner, self.op, self.left = inner, op, failures
        self.faults = 0

    def _maybe_fail(self, op: str) -> None:
        if op == self.op and self.left > 0:
            self.left -= 1
            self.faults += 1
            raise TransientStorageError("SlowDown (injected)")

    def put(self, key: str, body: BinaryIO) -> int:
        if key.startswith("outputs/"):
            self._maybe_fail("put")
        return self.inner.put(key, body)

    def get(self, key: str) -> BinaryIO:
        self._maybe_fail("get")
        return self.inner.get(key)

    def delete(self, key: str) -> DeleteResult:
        self._maybe_fail("delete")
        return self.inner.delete(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def keys(self, prefix: str = "") -> Iterator[str]:
        return self.inner.keys(prefix)

    def info(self) -> StoreInfo:
        return self.inner.info()

    def entries(self, prefix: str = "") -> Iterator[StoreEntry]:
        return self.inner.entries(prefix)


@pytest.fixture
def flaky(make_settings: Any) -> Iterator[Any]:
    from worker.bootstrap import Container, set_container

    def build(op: str, failures: int, **overrides: Any) -> Any:
        container = Container(make_settings(retry_backoff_seconds=0, **overrides))
        store = FlakyStore(container.store, op, failures)
        container.__dict__["store"] = store  # injected collaborator replaces the cached one
        set_container(container)
        built.append(container)
        return container, store

    built: list[Any] = []
    yield build
    for container in built:
        container.close()
    set_container(None)


@pytest.mark.parametrize("op", ["get", "put", "delete"])
def test_transient_faults_are_retried_until_success(
    flaky: Any, astronaut_jpeg: bytes, op: str
) -> None:
    container, store = flaky(op, failures=3, max_retries=6)
    job_id = container.client.submit(astronaut_jpeg, "detect", subject_id="s-flaky")
    status = container.service.status(job_id)
    assert store.faults == 3
    assert status["status"] == "succeeded" and status["original_deleted"]
    assert status["outputs"] == ["faces.json"]
    if op != "delete":  # a failed delete happens after the job ended: no hand-back needed
        assert status["retries"] == 3


def test_spent_retries_fail_the_job_and_remove_partial_outputs(
    flaky: Any, astronaut_jpeg: bytes
) -> None:
    container, store = flaky("put", failures=100, max_retries=2)
    job_id = container.client.submit(astronaut_jpeg, "detect", subject_id="s-flaky")
    status = container.service.status(job_id)
    assert (status["status"], status["error_code"]) == ("failed", "retries_exhausted")
    assert status["original_deleted"] is True
    assert list(container.store.keys()) == []
    assert store.faults == 3  # the first try and two retries
