"""Data stays inside the allowed regions: the worker refuses to start against anything else."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.conftest import REGION
from tests.workers import ROOT, settings_env
from worker.storage.errors import RegionNotAllowed


def _bucket(endpoint: str, region: str) -> str:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=region)
    name = f"fm-{uuid.uuid4().hex[:12]}"
    if region == "us-east-1":
        s3.create_bucket(Bucket=name)
    else:
        s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
    return name


def _settings(tmp_path: Path, endpoint: str, bucket: str, **extra: Any) -> dict[str, Any]:
    return {
        "home": tmp_path / "var",
        "store_url": f"s3://{bucket}/v1",
        "s3_endpoint_url": endpoint,
        "s3_region": REGION,
        **extra,
    }


def test_preflight_accepts_an_allowed_bucket(moto_endpoint: str, tmp_path: Path) -> None:
    from worker.bootstrap import Container
    from worker.settings import load_settings

    bucket = _bucket(moto_endpoint, REGION)
    container = Container(load_settings(**_settings(tmp_path, moto_endpoint, bucket)))
    assert container.preflight()["store_region"] == REGION


def test_preflight_refuses_a_bucket_outside(moto_endpoint: str, tmp_path: Path) -> None:
    from worker.bootstrap import Container
    from worker.settings import load_settings

    bucket = _bucket(moto_endpoint, "eu-west-1")
    container = Container(load_settings(**_settings(tmp_path, moto_endpoint, bucket)))
    with pytest.raises(RegionNotAllowed, match="eu-west-1"):
        container.preflight()


def test_preflight_refuses_a_kms_key_outside(moto_endpoint: str, tmp_path: Path) -> None:
    from worker.bootstrap import Container
    from worker.settings import load_settings

    kms = boto3.client("kms", endpoint_url=moto_endpoint, region_name="us-west-2")
    key = kms.create_key()["KeyMetadata"]["Arn"]
    bucket = _bucket(moto_endpoint, REGION)
    settings = _settings(
        tmp_path, moto_endpoint, bucket, keyring=key, kms_endpoint_url=moto_endpoint
    )
    container = Container(load_settings(**settings))
    with pytest.raises(RegionNotAllowed, match="KMS"):
        container.preflight()


@pytest.mark.services
def test_worker_process_refuses_to_start(moto_endpoint: str, tmp_path: Path) -> None:
    bucket = _bucket(moto_endpoint, "us-east-1")
    settings = _settings(tmp_path, moto_endpoint, bucket, broker_url="memory://")
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("celery")), "-A", "worker.celery_app", "worker"],
        cwd=ROOT,
        env=settings_env(settings),
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert b"refused to start" in proc.stderr + proc.stdout
