"""Fixtures of the objects-layer tests."""

from __future__ import annotations

import socket

import pytest

from worker.storage.base import ObjectStore


@pytest.fixture
def dead_store() -> ObjectStore:
    """A real S3Store whose endpoint refuses connections (nothing listens on the port): every
    call meets the transient fault a store outage raises."""
    import boto3
    from botocore.config import Config

    from worker.storage.s3 import S3Store

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = boto3.client(
        "s3",
        region_name="cn-north-1",
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=1),
    )
    return S3Store(client, "bucket", "")
