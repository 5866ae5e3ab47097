"""The one composition root: builds the ledger, keyring, stores, vault and services from settings.

Nothing is built at import time. Each process (CLI, worker child) builds one :class:`Container`
lazily through :func:`get_container`; a forked Celery child calls :func:`reset_container` first so
it never shares the parent's database connections.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
from botocore.config import Config as BotoConfig
from celery import Celery

from pipelines.faces import CenterFaceDetector, DetectorConfig, FaceDetector
from pipelines.media import ImageLimits
from worker.crypto import Envelope, Keyring, KmsKeyring, LocalKeyring, SubjectKeys
from worker.jobs.client import JobClient
from worker.jobs.registry import Tools
from worker.jobs.service import JobService, ServiceConfig
from worker.ledger import audit
from worker.ledger.audit import AuditAuthenticator
from worker.ledger.checkpoints import Checkpointer
from worker.ledger.db import Database
from worker.ledger.pseudonyms import Pseudonymizer
from worker.ledger.subject_keys import LedgerSubjectKeyStore
from worker.ledger.subjects import SubjectRegistry
from worker.retention.deleter import Deleter
from worker.retention.epochs import KeyEpochs, kms_epoch_state
from worker.retention.policy import parse_ttl
from worker.retention.rights import SubjectRights
from worker.retention.sweep import SweepConfig, Sweeper, utcnow
from worker.settings import Settings, load_settings
from worker.storage.base import ObjectStore
from worker.storage.errors import RegionNotAllowed
from worker.storage.local import LocalStore
from worker.storage.s3 import S3Store
from worker.storage.vault import Vault

_BOTO = BotoConfig(
    retries={"max_attempts": 5, "mode": "adaptive"},
    connect_timeout=5,
    read_timeout=60,
    signature_version="s3v4",
)


class Container:
    """Every long-lived collaborator of one process, built on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._detector: FaceDetector | None = None

    @cached_property
    def db(self) -> Database:
        """The ledger database (schema brought up to date on first use)."""
        db = Database(self.settings.effective_database_url)
        db.migrate()
        # every audit entry appended through this ledger is MAC'd under the audit key
        audit.bind(db.engine, self.audit_auth)
        return db

    @cached_property
    def audit_auth(self) -> AuditAuthenticator:
        """The audit log's MAC key (a service secret wrapped by the keyring; read lazily)."""
        return AuditAuthenticator(lambda: self.keyring)

    @cached_property
    def checkpoints(self) -> Checkpointer:
        """Signed audit checkpoints in the object store (``checkpoints/``)."""
        return Checkpointer(self.db, self.store, self.audit_auth)

    def checkpoint(self) -> None:
        """End of a unit of work: checkpoint the audit head if this process appended entries
        (a failure is logged and retried at the end of the next unit of work)."""
        if "db" in self.__dict__ and audit.appended(self.db.engine):
            self.checkpoints.write_quietly()

    @cached_property
    def keyring(self) -> Keyring:
        """``local`` → the KEK file under home; otherwise the KMS key named by the setting."""
        if self.settings.keyring == "local":
            return LocalKeyring(self.settings.home_dir / "keys" / "kek.json")
        client = boto3.client(
            "kms",
            region_name=self.settings.s3_region,
            endpoint_url=self.settings.kms_endpoint_url or None,
            config=_BOTO,
        )
        # The current KMS key is the one the newest KEK epoch recorded in the ledger (read on
        # every KMS call, so no process keeps wrapping under a key an epoch retired).
        return KmsKeyring(
            self.settings.keyring,
            client,
            epoch_keys=self.settings.kms_epoch_keys,
            state=lambda: kms_epoch_state(self.db, "kms"),
        )

    @cached_property
    def subject_keys(self) -> SubjectKeys:
        """Subject keys, wrapped by the keyring, persisted in the ledger."""
        return SubjectKeys(self.keyring, LedgerSubjectKeyStore(self.db))

    @cached_property
    def envelope(self) -> Envelope:
        """The streaming envelope cipher."""
        return Envelope(self.subject_keys, segment_size=self.settings.segment_size)

    @cached_property
    def store(self) -> ObjectStore:
        """``file://DIR`` → LocalStore; ``s3://bucket/prefix`` → S3Store."""
        url = urlparse(self.settings.effective_store_url)
        if url.scheme == "file":
            return LocalStore(self.settings.home_dir / "store" if not url.path else Path(url.path))
        if url.scheme == "s3":
            client = boto3.client(
                "s3",
                region_name=self.settings.s3_region,
                endpoint_url=self.settings.s3_endpoint_url or None,
                config=_BOTO,
            )
            return S3Store(
                client,
                url.netloc,
                url.path,
                verify_by_listing=self.settings.delete_verify == "listing",
            )
        raise ValueError("store_url must be file://... or s3://bucket/prefix")

    @cached_property
    def vault(self) -> Vault:
        """Encryption paired with the store."""
        return Vault(self.store, self.envelope)

    @cached_property
    def pseudonyms(self) -> Pseudonymizer:
        """Upstream subject id → keyed hash."""
        return Pseudonymizer(self.db, self.keyring)

    @cached_property
    def subjects(self) -> SubjectRegistry:
        """Find-or-create of data subjects."""
        return SubjectRegistry(self.db, self.pseudonyms, self.subject_keys)

    def detector(self) -> FaceDetector:
        """The face model, loaded once per process on first use."""
        if self._detector is None:
            self._detector = CenterFaceDetector.load(
                DetectorConfig(
                    threshold=self.settings.detector_threshold,
                    working_size=self.settings.detector_working_size,
                )
            )
        return self._detector

    @cached_property
    def tools(self) -> Tools:
        """What job handlers get."""
        import math

        from pipelines.faces.tracking import TrackerConfig
        from pipelines.media.video import VideoLimits

        s = self.settings
        return Tools(
            detector=self.detector,
            image_limits=ImageLimits(
                max_bytes=s.max_upload_bytes,
                max_pixels=s.max_image_pixels,
            ),
            video_limits=VideoLimits(
                max_bytes=s.max_upload_bytes,
                max_duration_s=s.max_video_seconds,
                max_width=s.max_video_side,
                max_height=s.max_video_short_side,
                # generous for 120 fps phone clips; the duration limit is the one that binds
                max_frames=max(1, math.ceil(s.max_video_seconds * 120)),
            ),
            tracker=TrackerConfig(detect_every=s.detect_every),
        )

    @cached_property
    def service(self) -> JobService:
        """The job lifecycle."""
        s = self.settings
        return JobService(
            self.db,
            self.vault,
            self.tools,
            deleter=self.deleter,
            sampler=self.sampler.sample,
            config=ServiceConfig(
                lease_seconds=s.lease_seconds,
                max_deliveries=s.max_deliveries,
                max_retries=s.max_retries,
                max_upload_bytes=s.max_upload_bytes,
                output_retention=s.retention.ttl("output"),
            ),
        )

    @cached_property
    def sampler(self) -> Any:
        """Research sampling at job time (``worker.research.sampling.Sampler``)."""
        from worker.research.sampling import Sampler, SamplerConfig
        from worker.research.staging import Stager
        from worker.research.store import SampleWriter

        s = self.settings
        return Sampler(
            self.db,
            SampleWriter(self.db, self.vault, s.retention.ttl("research"), utcnow),
            Stager(self.db, self.vault, s.retention.ttl("staging"), utcnow),
            self.detector,
            self.pseudonyms.subject_hash,
            SamplerConfig(
                rate=s.research.sample_rate, operator=s.research.operator, k=s.research.k_same_k
            ),
            image_limits=self.tools.image_limits,
            video_limits=self.tools.video_limits,
            tracker=self.tools.tracker,
        )

    @cached_property
    def ksame(self) -> Any:
        """The k-Same batch builder (``worker.research.staging.KSameBatcher``)."""
        from worker.research.staging import BatcherConfig, KSameBatcher
        from worker.research.store import SampleWriter

        s = self.settings
        return KSameBatcher(
            self.db,
            self.vault,
            self.deleter,
            SampleWriter(self.db, self.vault, s.retention.ttl("research"), utcnow),
            self.detector,
            BatcherConfig(k=s.research.k_same_k),
            utcnow,
        )

    @cached_property
    def deleter(self) -> Deleter:
        """The one deletion path (store, then ledger, receipts)."""
        return Deleter(self.db, self.store, utcnow)

    @cached_property
    def rights(self) -> SubjectRights:
        """Erasure, export, consent withdrawal, legal holds."""
        return SubjectRights(
            self.db,
            self.vault,
            self.subject_keys,
            self.deleter,
            on_revoked=lambda subject_id: self.releases.on_revoked(subject_id),
            crypto_status=self._crypto_status,
        )

    def _crypto_status(self, key_id: str) -> tuple[bool, datetime | None]:
        status = self.epochs.erasure_status(key_id)
        return status.complete, status.complete_by

    @cached_property
    def epochs(self) -> KeyEpochs:
        """KEK epochs: cryptographic erasure, and the one re-wrap pass behind ``keys rotate``."""
        return KeyEpochs(
            self.db,
            self.subject_keys,
            delay=self.settings.epoch_delay,
            rewrap_releases=lambda: int(self.releases.rewrap()),
        )

    @cached_property
    def sweeper(self) -> Sweeper:
        """The retention sweep."""
        s = self.settings
        grace = parse_ttl(s.orphan_grace)
        return Sweeper(
            self.db,
            self.store,
            self.deleter,
            SweepConfig(
                batch=s.sweep_batch,
                lock_ttl=timedelta(seconds=s.sweep_lock_seconds),
                original_ttl=s.retention.ttl("original"),
                requeue_after=timedelta(seconds=s.visibility_timeout),
                orphan_grace=grace if grace is not None else timedelta(days=36500),
            ),
            complete_erasures=self.rights.complete_pending_erasures,
        )

    @cached_property
    def releases(self) -> Any:
        """Research dataset releases (``worker.research.release.ReleaseService``); a release
        of several shards is fanned out as a Celery group unless the settings are eager."""
        from worker.research.release import ReleaseConfig, ReleaseService
        from worker.research.release.keys import SigningKeys

        s = self.settings
        return ReleaseService(
            self.db,
            self.store,
            self.vault,
            self.keyring,
            SigningKeys(self.db, self.keyring),
            self.deleter,
            ReleaseConfig(
                default_k=s.research.release_k,
                shard_samples=s.research.shard_samples,
                segment_size=s.segment_size,
                max_sample_bytes=s.max_upload_bytes,
            ),
            fan_out=None if s.eager else self._release_fan_out,
            finish_later=None if s.eager else self._release_finish_later,
            # the finish task of a published release purges its revoked samples
            purge_later=None if s.eager else self._release_finish_later,
        )

    def _release_fan_out(self, release_id: str, shards: int) -> None:
        """Send the shard tasks of a release as one Celery group on the research queue."""
        from celery import group

        from worker.tasks.releases import BUILD_SHARD

        group(
            self.producer.signature(BUILD_SHARD, args=[release_id, i], queue="research")
            for i in range(shards)
        ).apply_async()

    def _release_finish_later(self, release_id: str) -> None:
        from worker.tasks.releases import FINISH

        self.producer.send_task(FINISH, args=[release_id], queue="research")

    def send(self, task: str, args: list[Any], queue: str) -> None:
        """Send a task by name; with no broker, run it here and now."""
        if self.settings.eager:
            import worker.tasks.privacy  # noqa: F401  (registers the privacy tasks)
            from worker.celery_app import app

            app.tasks[task].apply(args=args, throw=True)
        else:
            self.producer.send_task(task, args=args, queue=queue)

    @cached_property
    def client(self) -> JobClient:
        """The upstream-facing client; enqueues onto the media queue."""
        return JobClient(
            self.db,
            self.vault,
            self.subjects,
            enqueue=self.enqueue,
            max_upload_bytes=self.settings.max_upload_bytes,
            original_max_age=self.settings.retention.ttl("original"),
            send=self.send,
        )

    @cached_property
    def producer(self) -> Celery:
        """A Celery instance used only to send messages to the configured broker."""
        from worker.celery_app import celery_config

        producer = Celery("facemedia-producer", set_as_current=False)
        producer.conf.update(celery_config(self.settings))
        return producer

    def enqueue(self, job_id: str) -> None:
        """Send ``facemedia.media.process(job_id)``; with no broker, run it here and now."""
        from worker.tasks.media import PROCESS, run_inline

        if self.settings.eager:
            run_inline(self, job_id)
        else:
            self.producer.send_task(PROCESS, args=[job_id], queue="media")

    def preflight(self) -> dict[str, Any]:
        """Refuse to run against a bucket or KMS key outside the allowed regions (statement 6.1)."""
        allowed = set(self.settings.allowed_regions)
        info = self.store.info()
        if info.region is not None and info.region not in allowed:
            raise RegionNotAllowed(f"bucket region {info.region} is not in allowed_regions")
        kms_region = self.keyring.region
        if kms_region is not None and kms_region not in allowed:
            raise RegionNotAllowed(f"KMS key region {kms_region} is not in allowed_regions")
        return {
            "store": info.kind,
            "store_region": info.region,
            "versioned": info.versioned,
            "keyring": type(self.keyring).__name__,
            "keyring_region": kms_region,
        }

    def close(self) -> None:
        """Release connections."""
        if "db" in self.__dict__:
            self.db.dispose()
        if "producer" in self.__dict__:
            self.producer.close()


_container: Container | None = None


def get_container() -> Container:
    """This process's container, built from the settings on first call."""
    global _container
    if _container is None:
        _container = Container(load_settings())
    return _container


def set_container(container: Container | None) -> None:
    """Install a container (tests, the CLI with explicit settings)."""
    global _container
    _container = container


def reset_container() -> None:
    """Forget this process's container (after fork: never share the parent's connections)."""
    global _container
    _container = None


def checkpoint_current() -> None:
    """Checkpoint the audit log of this process's container, if one was built and appended
    (the end-of-command, end-of-task hook; never builds a container)."""
    if _container is not None:
        _container.checkpoint()
