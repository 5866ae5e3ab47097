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
        "config_regions": "ok",
        "broker": "ok",
        "database": "ok",
        "bucket": "ok",
        "bucket_region": "ok",
        "bucket_versioning": "ok",
        "kms_region": "ok",
        "kms": "ok",
        "clock": "ok",
    }, [c.to_json() for c in checks.values()]
    # SeaweedFS has no regions: doctor names the region it checked and where that came from
    assert "is in cn-north-1, declared by store_region" in checks["bucket_region"].detail


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


def test_unversioned_bucket(deployment: Callable[..., dict[str, Any]], s3_endpoint: str) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION)
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
    # a store that reports its region (SeaweedFS reports none): moto's server
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="eu-west-1")
    bucket = f"fm-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    settings = deployment(
        store_url=f"s3://{bucket}/v1", s3_endpoint_url=moto_endpoint, store_region=""
    )
    _migrated(settings)
    check = _assert_one_failure(
        run_checks(load_settings(**settings)), "bucket_region", "cn-north-1 or cn-northwest-1"
    )
    assert "eu-west-1 (reported by the store" in check.detail
    contradicted = deployment(
        store_url=f"s3://{bucket}/v1", s3_endpoint_url=moto_endpoint, store_region=REGION
    )
    check = _assert_one_failure(
        run_checks(load_settings(**contradicted)), "bucket_region", "FACEMEDIA_STORE_REGION"
    )
    assert "reports region eu-west-1, but store_region declares cn-north-1" in check.detail


def test_regionless_store_without_a_declared_region(
    deployment: Callable[..., dict[str, Any]],
) -> None:
    settings = deployment(store_region="")  # SeaweedFS answers none: us-east-1 on AWS
    _migrated(settings)
    check = _assert_one_failure(
        run_checks(load_settings(**settings)), "bucket_region", "FACEMEDIA_STORE_REGION"
    )
    assert "us-east-1 (the store reports no region" in check.detail
    declared = deployment(store_region="eu-west-1")
    checks = _by_name(run_checks(load_settings(**declared)))
    assert [n for n, c in checks.items() if c.status == "fail"] == [
        "config_regions",
        "bucket_region",
    ]
    assert (
        "store_region names eu-west-1, outside allowed_regions" in checks["config_regions"].detail
    )
    assert "eu-west-1 (declared by store_region" in checks["bucket_region"].detail


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
    deployment: Callable[..., dict[str, Any]], s3_endpoint: str, tmp_path: Path
) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION)
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


def test_configured_regions_are_checked_first_without_the_network(
    deployment: Callable[..., dict[str, Any]],
) -> None:
    """A region outside allowed_regions is named as such even when nothing can be reached:
    the configuration check runs first and needs no network."""
    nowhere = f"http://127.0.0.1:{free_port()}"
    settings = deployment(
        broker_url=f"redis://127.0.0.1:{free_port()}/0",
        database_url=f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/x",
        s3_endpoint_url=nowhere,
        kms_endpoint_url=nowhere,
        s3_region="us-west-2",
        keyring=f"arn:aws:kms:eu-west-1:123456789012:key/{uuid.uuid4()}",
    )
    checks = run_checks(load_settings(**settings))
    first = checks[0]
    assert first.name == "config_regions" and first.status == "fail", first
    assert "s3_region names us-west-2" in first.detail
    assert "keyring (KMS key ARN) names eu-west-1" in first.detail
    assert "FACEMEDIA_S3_REGION" in first.fix
    assert _by_name(checks)["bucket"].status == "fail"  # unreachable, and said so apart


def test_doctor_reads_at_80_columns_and_masks_only_real_passwords(
    deployment: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    """At 80 columns: the table fits, every fix is printed whole under it (a command is
    never cut), a URL without a password shows no ``**``, one with a password shows ``***``."""
    port = free_port()
    bad = deployment(
        broker_url=f"redis://127.0.0.1:{port}/0",
        database_url=f"postgresql+psycopg://facemedia:s3cret@127.0.0.1:{free_port()}/fm",
        store_url=f"s3://fm-missing-{uuid.uuid4().hex[:8]}/v1",
    )
    env = settings_env(bad) | {"COLUMNS": "80", "TERM": "dumb"}
    proc = subprocess.run(
        [FACEMEDIA, "doctor"], cwd=ROOT, env=env, capture_output=True, timeout=90, text=True
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    text = proc.stdout
    table, _, fixes = text.partition("To fix:")
    assert fixes, text
    assert max(len(line) for line in table.splitlines()) <= 80, table
    report = {c.name: c for c in run_checks(load_settings(**bad))}
    for name in ("broker", "database", "bucket"):
        assert f"  {name}: {report[name].fix}" in fixes.splitlines(), (name, fixes)
    assert f"redis://127.0.0.1:{port}/0" in text.replace("\n", "").replace(" ", "")
    assert ":**@" not in text  # kombu's mask of a password that is not there
    assert "facemedia:***@127.0.0.1" in text.replace("\n", "").replace(" ", "")
    assert "s3cret" not in text
