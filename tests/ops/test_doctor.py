"""``facemedia doctor`` names each misconfiguration it is given, with a one-line fix."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.conftest import REGION, free_port
from tests.workers import CELERY, ROOT, settings_env
from worker.doctor import Check, run_checks
from worker.settings import load_settings

pytestmark = pytest.mark.services

FACEMEDIA = str(Path(CELERY).with_name("facemedia"))


def _by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def _migrated(settings: dict[str, Any]) -> None:
    from worker.ledger.db import Database

    db = Database(settings["database_url"])
    db.migrate()
    db.dispose()


def _kms_key(endpoint: str, region: str) -> str:
    kms = boto3.client("kms", endpoint_url=endpoint, region_name=region)
    return str(kms.create_key(Description="facemedia doctor test")["KeyMetadata"]["Arn"])


def _assert_one_failure(checks: list[Check], name: str, fix_says: str) -> Check:
    failed = [c for c in checks if c.status == "fail"]
    assert [c.name for c in failed] == [name], [c.to_json() for c in checks]
    check = failed[0]
    assert fix_says in check.fix, check
    assert "\n" not in check.fix and "\n" not in check.detail and check.fix
    return check


def test_a_sound_deployment_passes_every_check(
    deployment: Callable[..., dict[str, Any]], moto_endpoint: str
) -> None:
    settings = deployment(keyring=_kms_key(moto_endpoint, REGION), kms_endpoint_url=moto_endpoint)
    _migrated(settings)
    checks = _by_name(run_checks(load_settings(**settings)))
    assert {n: c.status for n, c in checks.items()} == {
        "broker": "ok",
        "database": "ok",
        "bucket": "ok",
        "bucket_region": "ok",
        "bucket_versioning": "ok",
        "kms_region": "ok",
        "kms": "ok",
        "clock": "ok",
    }, [c.to_json() for c in checks.values()]


def test_unreachable_broker(deployment: Callable[..., dict[str, Any]]) -> None:
    settings = deployment(broker_url=f"redis://:s3cret@127.0.0.1:{free_port()}/0")
    _migrated(settings)
    started = time.monotonic()
    check = _assert_one_failure(
        run_checks(load_settings(**settings)), "broker", "FACEMEDIA_BROKER_URL"
    )
    assert time.monotonic() - started < 20
    assert "s3cret" not in check.detail  # the password is masked


def test_missing_migration(deployment: Callable[..., dict[str, Any]]) -> None:
    from alembic import command

    from worker.ledger.db import alembic_config

    settings = deployment()
    check = _assert_one_failure(
        run_checks(load_settings(**settings)), "database", "alembic upgrade head"
    )
    assert "none (empty database)" in check.detail
    command.upgrade(alembic_config(settings["database_url"]), "0002")  # one migration behind
    check = _assert_one_failure(
        run_checks(load_settings(**settings)), "database", "alembic upgrade head"
    )
    assert "revision 0002" in check.detail, check


def test_unversioned_bucket(deployment: Callable[..., dict[str, Any]], moto_endpoint: str) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name=REGION)
    bucket = f"fm-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    settings = deployment(store_url=f"s3://{bucket}/v1")
    _migrated(settings)
    _assert_one_failure(
        run_checks(load_settings(**settings)), "bucket_versioning", "put-bucket-versioning"
    )


def test_bucket_in_a_wrong_region(
    deployment: Callable[..., dict[str, Any]], moto_endpoint: str
) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="eu-west-1")
    bucket = f"fm-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    settings = deployment(store_url=f"s3://{bucket}/v1")
    _migrated(settings)
    check = _assert_one_failure(
        run_checks(load_settings(**settings)), "bucket_region", "cn-north-1 or cn-northwest-1"
    )
    assert "eu-west-1" in check.detail


def test_missing_bucket(deployment: Callable[..., dict[str, Any]]) -> None:
    settings = deployment(store_url=f"s3://fm-missing-{uuid.uuid4().hex[:8]}/v1")
    _migrated(settings)
    _assert_one_failure(run_checks(load_settings(**settings)), "bucket", "create fm-missing-")


def test_kms_key_in_a_wrong_region(
    deployment: Callable[..., dict[str, Any]], moto_endpoint: str
) -> None:
    settings = deployment(
        keyring=_kms_key(moto_endpoint, "eu-west-1"), kms_endpoint_url=moto_endpoint
    )
    _migrated(settings)
    checks = run_checks(load_settings(**settings))
    region = _by_name(checks)["kms_region"]
    assert region.status == "fail" and "eu-west-1" in region.detail
    assert "KMS key created in cn-north-1" in region.fix


def test_unknown_kms_key(deployment: Callable[..., dict[str, Any]], moto_endpoint: str) -> None:
    arn = f"arn:aws-cn:kms:{REGION}:123456789012:key/{uuid.uuid4()}"
    settings = deployment(keyring=arn, kms_endpoint_url=moto_endpoint)
    _migrated(settings)
    _assert_one_failure(run_checks(load_settings(**settings)), "kms", "kms:Decrypt")


def test_clock_skew(deployment: Callable[..., dict[str, Any]]) -> None:
    settings = deployment()
    _migrated(settings)
    checks = run_checks(load_settings(**settings), clock=lambda: time.time() + 300)
    check = _assert_one_failure(checks, "clock", "NTP")
    assert "+300 s" in check.detail or "+299 s" in check.detail or "+301 s" in check.detail


def test_the_command_exits_non_zero_and_prints_json(
    deployment: Callable[..., dict[str, Any]], moto_endpoint: str, tmp_path: Path
) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name=REGION)
    bucket = f"fm-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    bad = deployment(store_url=f"s3://{bucket}/v1", broker_url=f"redis://127.0.0.1:{free_port()}/0")
    proc = subprocess.run(
        [FACEMEDIA, "doctor", "--json"],
        cwd=ROOT,
        env=settings_env(bad),
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr.decode()[-2000:]
    report = json.loads(proc.stdout)
    failed = {c["name"]: c["fix"] for c in report["checks"] if not c["ok"]}
    assert report["ok"] is False
    assert set(failed) == {"broker", "database", "bucket_versioning"}, report
    _migrated(bad)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    good = {**bad, "broker_url": deployment()["broker_url"]}
    proc = subprocess.run(
        [FACEMEDIA, "doctor"], cwd=ROOT, env=settings_env(good), capture_output=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout.decode()[-3000:]
    assert b"fail" not in proc.stdout
