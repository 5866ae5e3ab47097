"""Data stays inside the allowed regions: the worker refuses to start against anything else.

The region checked is the one the store reports, or, for a store without regions (SeaweedFS),
the one the operator declares in ``store_region``."""

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


def _preflight(tmp_path: Path, endpoint: str, bucket: str, **extra: Any) -> dict[str, Any]:
    from worker.bootstrap import Container
    from worker.settings import load_settings

    container = Container(load_settings(**_settings(tmp_path, endpoint, bucket, **extra)))
    return container.preflight()


# SeaweedFS has no regions: GetBucketLocation answers none whatever the bucket was created with.


def test_a_regionless_store_reports_none(s3_endpoint: str) -> None:
    bucket = _bucket(s3_endpoint, REGION)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION)
    assert s3.get_bucket_location(Bucket=bucket).get("LocationConstraint") is None


def test_preflight_accepts_the_declared_region_of_a_regionless_store(
    s3_endpoint: str, tmp_path: Path
) -> None:
    bucket = _bucket(s3_endpoint, REGION)
    assert _preflight(tmp_path, s3_endpoint, bucket, store_region=REGION)["store_region"] == REGION


def test_preflight_refuses_a_regionless_store_without_a_declaration(
    s3_endpoint: str, tmp_path: Path
) -> None:
    bucket = _bucket(s3_endpoint, REGION)  # none on AWS means us-east-1: not allowed
    with pytest.raises(RegionNotAllowed, match="us-east-1"):
        _preflight(tmp_path, s3_endpoint, bucket)


def test_preflight_refuses_a_declared_region_outside(s3_endpoint: str, tmp_path: Path) -> None:
    bucket = _bucket(s3_endpoint, REGION)
    with pytest.raises(RegionNotAllowed, match="eu-west-1"):
        _preflight(tmp_path, s3_endpoint, bucket, store_region="eu-west-1")


# A store that reports a region (moto here, like AWS and MinIO with MINIO_REGION): SeaweedFS
# cannot be made to report one, so these keep moto's server.


def test_preflight_accepts_a_bucket_that_reports_an_allowed_region(
    moto_endpoint: str, tmp_path: Path
) -> None:
    bucket = _bucket(moto_endpoint, REGION)
    assert _preflight(tmp_path, moto_endpoint, bucket)["store_region"] == REGION


def test_preflight_refuses_a_bucket_outside(moto_endpoint: str, tmp_path: Path) -> None:
    bucket = _bucket(moto_endpoint, "eu-west-1")
    with pytest.raises(RegionNotAllowed, match="eu-west-1"):
        _preflight(tmp_path, moto_endpoint, bucket)


def test_a_declaration_never_overrides_a_reported_region(
    moto_endpoint: str, tmp_path: Path
) -> None:
    bucket = _bucket(moto_endpoint, "eu-west-1")
    with pytest.raises(RegionNotAllowed, match=r"reports region eu-west-1.*declares cn-north-1"):
        _preflight(tmp_path, moto_endpoint, bucket, store_region=REGION)


def test_a_declaration_is_ignored_on_aws_endpoints() -> None:
    from worker.storage.s3 import bucket_region, is_aws_endpoint

    assert is_aws_endpoint("https://s3.cn-north-1.amazonaws.com.cn")
    assert is_aws_endpoint("https://s3.amazonaws.com")
    assert not is_aws_endpoint("http://127.0.0.1:8333")
    assert not is_aws_endpoint("https://amazonaws.com.evil.example")
    assert bucket_region(None, REGION, aws=True)[0] == "us-east-1"
    assert bucket_region(None, REGION, aws=False)[0] == REGION


def test_preflight_refuses_a_kms_key_outside(
    moto_endpoint: str, s3_endpoint: str, tmp_path: Path
) -> None:
    kms = boto3.client("kms", endpoint_url=moto_endpoint, region_name="us-west-2")
    key = kms.create_key()["KeyMetadata"]["Arn"]
    bucket = _bucket(s3_endpoint, REGION)
    with pytest.raises(RegionNotAllowed, match="KMS"):
        _preflight(
            tmp_path,
            s3_endpoint,
            bucket,
            store_region=REGION,
            keyring=key,
            kms_endpoint_url=moto_endpoint,
        )


@pytest.mark.services
def test_worker_process_refuses_to_start(s3_endpoint: str, tmp_path: Path) -> None:
    bucket = _bucket(s3_endpoint, REGION)  # no store_region: us-east-1
    settings = _settings(tmp_path, s3_endpoint, bucket, broker_url="memory://")
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("celery")), "-A", "worker.celery_app", "worker"],
        cwd=ROOT,
        env=settings_env(settings),
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert b"refused to start" in proc.stderr + proc.stdout
