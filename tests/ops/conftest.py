"""Fixtures of the operations tests: a worker deployment on real services (Redis, PostgreSQL,
SeaweedFS's S3 over HTTP). Redis database 13 keeps these queues apart from the other suites'."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import pytest

from tests.conftest import REGION


@pytest.fixture(scope="session")
def big_jpeg() -> bytes:
    """A 4096² photo: seconds of decode and tiled detection per job, even on a quiet machine
    (2048² finished inside a 1 s shutdown window there, so nothing was handed back)."""
    from skimage import data

    image = cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), (4096, 4096))
    ok, buf = cv2.imencode(".jpg", image)
    assert ok
    return bytes(buf)


@pytest.fixture
def ops_redis(redis_url: str) -> str:
    """An empty Redis database of this test's own for the broker."""
    return redis_url


@pytest.fixture
def deployment(
    ops_redis: str, pg_url: str, s3_bucket: str, s3_endpoint: str, tmp_path: Path
) -> Callable[..., dict[str, Any]]:
    """Settings of a production-shaped deployment (extra settings as keyword arguments)."""

    def build(**extra: Any) -> dict[str, Any]:
        return {
            "home": tmp_path / "var",
            "broker_url": ops_redis,
            "database_url": pg_url,
            "store_url": f"s3://{s3_bucket}/v1",
            "s3_endpoint_url": s3_endpoint,
            "s3_region": REGION,
            "store_region": REGION,  # SeaweedFS has no regions: the operator names it
            "lease_seconds": 6,
            **extra,
        }

    return build


def container_for(settings: dict[str, Any]) -> Any:
    """A container on these settings, ledger migrated."""
    from worker.bootstrap import Container
    from worker.settings import load_settings

    container = Container(load_settings(**settings))
    container.db.migrate()
    return container
