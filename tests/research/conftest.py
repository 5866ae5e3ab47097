"""Fixtures shared by the research tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest


@pytest.fixture
def containers(make_settings: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """Build embedded containers from settings overrides; each becomes the process's container
    (so tasks and the CLI use it) and all are closed at the end."""
    from worker.bootstrap import Container, set_container

    built: list[Any] = []

    def build(**overrides: Any) -> Any:
        container = Container(make_settings(**overrides))
        set_container(container)
        built.append(container)
        return container

    try:
        yield build
    finally:
        for container in built:
            container.close()
        set_container(None)


@pytest.fixture(autouse=True)
def researcher_config(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """Each test's researcher has a config directory of their own (pinned signers, newest
    revocation list seen): ``$XDG_CONFIG_HOME`` points into the test's temporary directory."""
    from pathlib import Path

    base: Path = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(base))
    return base / "facemedia"


@pytest.fixture(scope="session")
def sample_images() -> list[bytes]:
    """De-identified images: the astronaut, face region masked, 128 px, in colour variants."""
    import cv2
    import numpy as np
    from skimage import data

    bgr = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    cv2.ellipse(bgr, (225, 125), (95, 120), 0, 0, 360, (128, 128, 128), -1)
    small = cv2.resize(bgr, (128, 128), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV)
    out = []
    for shift in range(0, 180, 12):
        v = hsv.copy()
        v[..., 0] = (v[..., 0].astype(np.int32) + shift) % 180
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(v, cv2.COLOR_HSV2BGR))
        assert ok
        out.append(bytes(buf))
    return out


@pytest.fixture
def broker_deployment(
    pg_url: str, s3_endpoint: str, s3_bucket: str, amqp_url: str, tmp_path: Any
) -> Callable[[str], dict[str, Any]]:
    """Settings of a deployment with RabbitMQ, PostgreSQL and S3 (objects under ``prefix``)."""
    from tests.conftest import REGION

    def build(prefix: str) -> dict[str, Any]:
        return {
            "home": tmp_path / "var",
            "broker_url": amqp_url,
            "database_url": pg_url,
            "store_url": f"s3://{s3_bucket}/{prefix}",
            "s3_endpoint_url": s3_endpoint,
            "s3_region": REGION,
            "store_region": REGION,  # SeaweedFS has no regions: the operator names it
        }

    return build
