"""``facemedia doctor``: check a deployment's configuration end to end, and say what to fix.

Each check returns a :class:`Check`: ``ok``, a one-line ``detail`` (what was found or what is
wrong) and, when not ok, a one-line ``fix``. Checks never migrate, create or change anything,
never print a password (:func:`shown_url` masks one, and shows a URL that has none as it is)
and stop waiting after a few seconds. ``status`` is ``ok``, ``fail`` or ``skip`` (not
applicable to this configuration). What can be checked without the network (the configured
regions) is checked first, so a region outside ``allowed_regions`` is named even when the bucket
or the KMS endpoint cannot be reached. :func:`render` prints the outcome for 80 columns: a
table, then each fix in full on its own line under it (commands are never cut).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlparse

from worker.settings import Settings

Clock = Callable[[], float]


@dataclass(frozen=True)
class Check:
    """One check's outcome."""

    name: str
    status: str  # ok | fail | skip
    detail: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        """True unless the check failed (a skip is not a failure)."""
        return self.status != "fail"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (with ``ok``)."""
        return {**asdict(self), "ok": self.ok}


def _ok(name: str, detail: str) -> Check:
    return Check(name, "ok", detail)


def _fail(name: str, detail: str, fix: str) -> Check:
    return Check(name, "fail", detail, fix)


def _skip(name: str, detail: str) -> Check:
    return Check(name, "skip", detail)


def _why(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def shown_url(url: str) -> str:
    """``url`` with its password replaced by ``***``; a URL without one is shown as it is
    (kombu's ``as_uri`` prints ``:**@`` even where there is no password)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


# ----- configuration (no network) ---------------------------------------------------------------


def check_configuration(settings: Settings) -> Check:
    """The regions the configuration names (the S3 client's region, a declared store region,
    the region in a KMS key ARN) are inside ``allowed_regions``: checked without the network,
    so a wrong region is named even when nothing can be reached."""
    import re

    name = "config_regions"
    allowed = settings.allowed_regions
    named: list[tuple[str, str, str]] = []  # (setting, region, variable)
    if urlparse(settings.effective_store_url).scheme == "s3":
        named.append(("s3_region", settings.s3_region, "FACEMEDIA_S3_REGION"))
        if settings.store_region:
            named.append(("store_region", settings.store_region, "FACEMEDIA_STORE_REGION"))
    arn = re.match(r"^arn:aws[a-z-]*:kms:([a-z0-9-]+):", settings.keyring)
    if arn:
        named.append(("keyring (KMS key ARN)", arn.group(1), "FACEMEDIA_KEYRING"))
    outside = [(s, r, v) for s, r, v in named if r not in allowed]
    if outside:
        variable = outside[0][2]
        return _fail(
            name,
            "; ".join(f"{s} names {r}" for s, r, _ in outside)
            + f", outside allowed_regions ({', '.join(allowed)}): the worker refuses to start",
            f"set {variable} to a region in {' or '.join(allowed)} (data must stay inside the "
            "allowed regions; do not widen allowed_regions)",
        )
    if not named:
        return _skip(name, "no region configured (local store, local keyring)")
    return _ok(
        name,
        ", ".join(f"{s} {r}" for s, r, _ in named) + ": inside allowed_regions",
    )


def _boto_config() -> Any:
    from botocore.config import Config

    return Config(
        retries={"max_attempts": 1, "mode": "standard"},
        connect_timeout=3,
        read_timeout=5,
        signature_version="s3v4",
    )


# ----- broker ------------------------------------------------------------------------------------


def check_broker(settings: Settings) -> Check:
    """The broker accepts a connection."""
    name = "broker"
    if not settings.broker_url:
        return _skip(name, "no broker_url: tasks run in-process (the embedded default)")
    from kombu.connection import Connection

    conn = Connection(settings.broker_url, connect_timeout=3)
    shown = shown_url(settings.broker_url)
    try:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=5)
    except Exception as exc:
        return _fail(
            name,
            f"cannot reach the broker at {shown} ({_why(exc)})",
            "start the broker or correct FACEMEDIA_BROKER_URL (host, port, credentials, vhost)",
        )
    finally:
        conn.release()
    return _ok(name, f"connected to {shown}")


# ----- database ----------------------------------------------------------------------------------


def check_database(settings: Settings) -> Check:
    """The ledger accepts a connection and its schema is at the newest migration."""
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    from worker.ledger.db import alembic_config

    name = "database"
    url = settings.effective_database_url
    shown = shown_url(url)
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    if url.startswith("sqlite") and not settings.database_url:
        path = url.split("///", 1)[-1]
        if not os.path.exists(path):
            return _skip(
                name, f"embedded SQLite ledger {shown} not created yet (it migrates itself)"
            )
    engine = create_engine(url, poolclass=NullPool, connect_args=_connect_args(url))
    try:
        from alembic.runtime.migration import MigrationContext

        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    except Exception as exc:
        return _fail(
            name,
            f"cannot connect to the ledger {shown} ({_why(exc)})",
            "start PostgreSQL or correct FACEMEDIA_DATABASE_URL (host, port, user, database)",
        )
    finally:
        engine.dispose()
    if current != head:
        return _fail(
            name,
            f"ledger schema is at revision {current or 'none (empty database)'}, newest is {head}",
            "run `alembic upgrade head` (or `facemedia db upgrade`) before starting workers",
        )
    return _ok(name, f"{shown} at migration head {head}")


def _connect_args(url: str) -> dict[str, Any]:
    if url.startswith("postgresql"):
        return {"connect_timeout": 3}
    return {}


# ----- bucket ------------------------------------------------------------------------------------


def _s3(settings: Settings) -> Any:
    import boto3

    return boto3.client(
        "s3",
        region_name=settings.s3_region,
        endpoint_url=settings.s3_endpoint_url or None,
        config=_boto_config(),
    )


def check_bucket(settings: Settings) -> list[Check]:
    """The bucket exists, versioning is enabled, and it lives in an allowed region."""
    url = urlparse(settings.effective_store_url)
    if url.scheme != "s3":
        return [_skip("bucket", f"local store {settings.effective_store_url} (no bucket)")]
    bucket = url.netloc
    s3 = _s3(settings)
    try:
        location = s3.get_bucket_location(Bucket=bucket)
    except Exception as exc:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        if code == "NoSuchBucket":
            return [
                _fail(
                    "bucket",
                    f"bucket {bucket} does not exist",
                    f"create {bucket} in one of {', '.join(settings.allowed_regions)} with "
                    "versioning enabled, or correct FACEMEDIA_STORE_URL",
                )
            ]
        return [
            _fail(
                "bucket",
                f"cannot read bucket {bucket} ({_why(exc)})",
                "check FACEMEDIA_S3_ENDPOINT_URL and that this role may s3:GetBucketLocation",
            )
        ]
    checks = [
        _ok("bucket", f"bucket {bucket} exists"),
        _check_bucket_region(settings, s3, location),
    ]
    try:
        status = s3.get_bucket_versioning(Bucket=bucket).get("Status", "")
    except Exception as exc:
        checks.append(
            _fail(
                "bucket_versioning",
                f"cannot read versioning of {bucket} ({_why(exc)})",
                "allow this role s3:GetBucketVersioning on the bucket",
            )
        )
        return checks
    if status == "Enabled":
        checks.append(_ok("bucket_versioning", f"versioning enabled on {bucket}"))
    else:
        checks.append(
            _fail(
                "bucket_versioning",
                f"versioning is {status or 'off'} on {bucket}: deletes could not be verified "
                "version by version and overwrites would lose track of versions",
                f"aws s3api put-bucket-versioning --bucket {bucket} "
                "--versioning-configuration Status=Enabled   (MinIO: mc version enable ALIAS/"
                f"{bucket})",
            )
        )
    return checks


def _check_bucket_region(settings: Settings, s3: Any, location: dict[str, Any]) -> Check:
    """The region the worker's guard checks (the one the store reports, else the declared
    ``store_region``; the rule is :func:`worker.storage.s3.bucket_region`), and which it was."""
    from worker.storage.errors import RegionNotAllowed
    from worker.storage.s3 import bucket_region, is_aws_endpoint

    bucket = urlparse(settings.effective_store_url).netloc
    reported = location.get("LocationConstraint")
    try:
        region, source = bucket_region(
            reported, settings.store_region, aws=is_aws_endpoint(s3.meta.endpoint_url)
        )
    except RegionNotAllowed as exc:
        return _fail(
            "bucket_region",
            f"{exc}; the worker refuses to start",
            "set FACEMEDIA_STORE_REGION to the region the store reports, or leave it empty",
        )
    if region in settings.allowed_regions:
        return _ok("bucket_region", f"bucket {bucket} is in {region}, {source}")
    fix = (
        f"use a bucket created in {' or '.join(settings.allowed_regions)} "
        "(data must stay inside the allowed regions; do not widen allowed_regions)"
    )
    if not reported and not settings.store_region:
        fix = (
            "a store without regions (SeaweedFS, MinIO without MINIO_REGION): set "
            "FACEMEDIA_STORE_REGION to where its machines are; on AWS S3 " + fix
        )
    return _fail(
        "bucket_region",
        f"bucket {bucket} is in {region} ({source}), outside allowed_regions "
        f"({', '.join(settings.allowed_regions)}); the worker refuses to start",
        fix,
    )


# ----- KMS ---------------------------------------------------------------------------------------


def check_kms(settings: Settings) -> list[Check]:
    """The KMS key wraps and unwraps a probe key, and lives in an allowed region."""
    if settings.keyring == "local":
        return [_skip("kms", "local keyring (keys/kek.json under home); no KMS key")]
    import boto3

    from worker.crypto import KmsKeyring

    client = boto3.client(
        "kms",
        region_name=settings.s3_region,
        endpoint_url=settings.kms_endpoint_url or None,
        config=_boto_config(),
    )
    keyring = KmsKeyring(settings.keyring, client)
    checks: list[Check] = []
    region = keyring.region
    if region is not None and region not in settings.allowed_regions:
        checks.append(
            _fail(
                "kms_region",
                f"KMS key is in {region}, outside allowed_regions "
                f"({', '.join(settings.allowed_regions)}); the worker refuses to start",
                f"use a KMS key created in {' or '.join(settings.allowed_regions)} "
                "and set FACEMEDIA_KEYRING to its ARN",
            )
        )
    else:
        checks.append(_ok("kms_region", f"KMS key region {region}"))
    context = {"facemedia:purpose": "doctor-probe"}
    try:
        probe = os.urandom(32)
        if keyring.unwrap(keyring.wrap(probe, context), context) != probe:
            raise RuntimeError("the unwrapped probe differs")
    except Exception as exc:
        checks.append(
            _fail(
                "kms",
                f"KMS key {settings.keyring} did not wrap and unwrap a probe key ({_why(exc)})",
                "check the key id/ARN, that the key is enabled, and that this role has "
                "kms:Encrypt, kms:Decrypt and kms:GenerateDataKey on it",
            )
        )
    else:
        checks.append(_ok("kms", "KMS key wraps and unwraps (Encrypt/Decrypt)"))
    return checks


# ----- clock -------------------------------------------------------------------------------------


def max_skew_seconds(settings: Settings) -> float:
    """Leases compare one worker's clock with another's: keep skew well under a lease."""
    return max(1.0, min(60.0, settings.lease_seconds / 3))


def check_clock(settings: Settings, clock: Clock = time.time) -> Check:
    """This machine's clock against the S3 endpoint's ``Date`` header."""
    name = "clock"
    url = urlparse(settings.effective_store_url)
    if url.scheme != "s3":
        return _skip(name, "local store: no remote clock to compare with")
    endpoint = settings.s3_endpoint_url or f"https://s3.{settings.s3_region}.amazonaws.com.cn"
    import urllib.error
    import urllib.request

    request = urllib.request.Request(endpoint, method="HEAD")
    before = clock()
    try:
        try:
            resp = urllib.request.urlopen(request, timeout=5)
            headers = resp.headers
        except urllib.error.HTTPError as exc:  # 403/404/405 still carry a Date
            headers = exc.headers
    except Exception as exc:
        return _fail(
            name,
            f"cannot reach {endpoint} to read its clock ({_why(exc)})",
            "check FACEMEDIA_S3_ENDPOINT_URL and network access to it",
        )
    after = clock()
    date = headers.get("Date") if headers is not None else None
    if not date:
        return _skip(name, f"{endpoint} sent no Date header")
    remote = parsedate_to_datetime(date).timestamp()
    skew = (before + after) / 2 - remote
    limit = max_skew_seconds(settings)
    # The Date header has one-second resolution: allow that on top of the limit.
    if abs(skew) > limit + 1:
        return _fail(
            name,
            f"this clock is {skew:+.0f} s off the storage endpoint's (limit ±{limit:.0f} s: "
            "leases assume clocks agree; S3 refuses requests skewed over 15 min)",
            "synchronise the clock with NTP (chrony/systemd-timesyncd) on this machine",
        )
    return _ok(name, f"clock within {abs(skew):.1f} s of the storage endpoint")


# ----- all ---------------------------------------------------------------------------------------


def run_checks(settings: Settings, clock: Clock = time.time) -> list[Check]:
    """Every check, in order; a check that crashes is reported as a failure, never raised."""
    results: list[Check] = []
    steps: list[tuple[str, Callable[[], Check | list[Check]]]] = [
        ("config_regions", lambda: check_configuration(settings)),
        ("broker", lambda: check_broker(settings)),
        ("database", lambda: check_database(settings)),
        ("bucket", lambda: check_bucket(settings)),
        ("kms", lambda: check_kms(settings)),
        ("clock", lambda: check_clock(settings, clock)),
    ]
    for name, step in steps:
        try:
            outcome = step()
        except Exception as exc:
            outcome = _fail(name, f"the check itself failed ({_why(exc)})", "see the detail above")
        results.extend(outcome if isinstance(outcome, list) else [outcome])
    return results


def render(checks: list[Check], console: Any) -> None:
    """Print the checks for a person on ``console`` (a rich Console), readable at 80 columns:
    a table of check, status and detail (details wrap, nothing is cut), then every fix in full
    under it, on a line of its own that is never wrapped by us (a command stays copyable)."""
    from rich.table import Table

    colour = {"ok": "green", "fail": "red", "skip": "yellow"}
    table = Table(title="facemedia doctor", expand=False)
    table.add_column("check", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("detail", overflow="fold")
    for c in checks:
        table.add_row(c.name, f"[{colour[c.status]}]{c.status}[/]", c.detail)
    console.print(table)
    fixes = [c for c in checks if c.fix and not c.ok]
    if fixes:
        console.print("\nTo fix:", highlight=False)
    for c in fixes:
        console.print(f"  {c.name}: {c.fix}", soft_wrap=True, highlight=False, markup=False)
