"""The one composition root: builds the ledger, keyring, stores, the objects layer (vault,
records helper, deleter) and the services from settings.

Nothing is built at import time. Each process (CLI, worker child) builds one :class:`Container`
lazily through :func:`get_container`; a forked Celery child calls :func:`reset_container` first so
it never shares the parent's database connections.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

# Imports are lazy (inside the properties that build each part) so that a process only loads
# what it uses: `facemedia status` or `audit verify` never load OpenCV, SciPy, PyAV, Celery or
# boto3 (tests/unit/test_cli_imports.py). The types below are for the checker only.
if TYPE_CHECKING:
    from botocore.config import Config as BotoConfig

    from pipelines.faces import FaceDetector
    from worker.crypto import Envelope, Keyring, SubjectKeys, SubjectKeyStore
    from worker.dispatch.base import Dispatcher
    from worker.jobs.client import JobClient
    from worker.jobs.registry import Tools
    from worker.jobs.service import JobService
    from worker.ledger.api_keys import ApiKeyStore
    from worker.ledger.audit import AuditAuthenticator
    from worker.ledger.checkpoints import Checkpointer
    from worker.ledger.db import Database
    from worker.ledger.pseudonyms import Pseudonymizer
    from worker.ledger.subjects import SubjectRegistry
    from worker.objects.deleter import Deleter
    from worker.objects.records import ObjectRecords
    from worker.objects.vault import Vault
    from worker.research.ksame.batcher import KSameBatcher
    from worker.research.release import ReleaseService
    from worker.research.sampling import Sampler
    from worker.retention.epochs import KeyEpochs
    from worker.retention.rights import SubjectRights
    from worker.retention.sweep import Sweeper
    from worker.settings import Settings
    from worker.storage.base import ObjectStore
    from worker.webhooks.delivery import WebhookService


def _boto_config(max_pool_connections: int = 10) -> BotoConfig:
    """botocore's client settings for S3 and KMS (imported only when one is built).

    S3 checksums (CRC32 of every body sent and read) only when an operation requires them:
    every object is an envelope whose AES-GCM segments authenticate its content end to end
    (a corrupted or truncated object fails to open), and on a plain-HTTP endpoint SigV4 also
    signs the payload's SHA-256, which the store checks. ``max_pool_connections``: as many as
    there may be concurrent uploads (the API's ``max_concurrent_uploads``), or they queue."""
    from botocore.config import Config as BotoConfig

    return BotoConfig(
        retries={"max_attempts": 5, "mode": "adaptive"},
        connect_timeout=5,
        read_timeout=60,
        signature_version="s3v4",
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        max_pool_connections=max_pool_connections,
    )


class Container:
    """Every long-lived collaborator of one process, built on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._detector: FaceDetector | None = None

    @cached_property
    def db(self) -> Database:
        """The ledger database (schema brought up to date on first use)."""
        from worker.ledger import audit
        from worker.ledger.db import Database

        db = Database(self.settings.effective_database_url)
        db.migrate()
        # every audit entry appended through this ledger is MAC'd under the audit key
        audit.bind(db.engine, self.audit_auth)
        return db

    @cached_property
    def audit_auth(self) -> AuditAuthenticator:
        """The audit log's MAC key (a service secret wrapped by the keyring; read lazily)."""
        from worker.ledger.audit import AuditAuthenticator

        return AuditAuthenticator(lambda: self.keyring)

    @cached_property
    def checkpoints(self) -> Checkpointer:
        """Signed audit checkpoints in the object store (``checkpoints/``)."""
        from worker.ledger.checkpoints import Checkpointer
        from worker.objects.layout import CHECKPOINTS

        return Checkpointer(self.db, self.store, self.audit_auth, CHECKPOINTS)

    def checkpoint(self) -> None:
        """End of a unit of work: checkpoint the audit head if this process appended entries
        (a failure is logged and retried at the end of the next unit of work)."""
        if "db" not in self.__dict__:
            return
        from worker.ledger import audit

        if audit.appended(self.db.engine):
            self.checkpoints.write_quietly()

    @cached_property
    def keyring(self) -> Keyring:
        """``local`` → the KEK file under home; otherwise the KMS key named by the setting."""
        if self.settings.keyring == "local":
            from worker.crypto.keyring_local import LocalKeyring

            return LocalKeyring(self.settings.home_dir / "keys" / "kek.json")
        import boto3

        from worker.crypto.keyring_kms import KmsKeyring
        from worker.retention.epochs import kms_epoch_state

        client = boto3.client(
            "kms",
            region_name=self.settings.s3_region,
            endpoint_url=self.settings.kms_endpoint_url or None,
            config=_boto_config(),
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
        from worker.crypto.subject_keys import SubjectKeys
        from worker.ledger.subject_keys import LedgerSubjectKeyStore

        return SubjectKeys(self.keyring, LedgerSubjectKeyStore(self.db))

    @cached_property
    def envelope(self) -> Envelope:
        """The streaming envelope cipher (the vault's)."""
        return self.vault.envelope

    def envelope_over(self, key_store: SubjectKeyStore) -> Envelope:
        """The envelope cipher as the vault's (this keyring, this segment size) over another
        subject-key store: a short command's read-only one (``facemedia crypto encrypt`` for a
        known subject reads its key over DB-API, without the ledger's ORM)."""
        from worker.crypto import Envelope, SubjectKeys

        return Envelope(
            SubjectKeys(self.keyring, key_store), segment_size=self.settings.segment_size
        )

    @cached_property
    def store(self) -> ObjectStore:
        """``file://DIR`` → LocalStore; ``s3://bucket/prefix`` → S3Store."""
        url = urlparse(self.settings.effective_store_url)
        if url.scheme == "file":
            from worker.storage.local import LocalStore

            return LocalStore(self.settings.home_dir / "store" if not url.path else Path(url.path))
        if url.scheme == "s3":
            import boto3

            from worker.storage.s3 import S3Store

            client = boto3.client(
                "s3",
                region_name=self.settings.s3_region,
                endpoint_url=self.settings.s3_endpoint_url or None,
                config=_boto_config(max(10, self.settings.api.max_concurrent_uploads)),
            )
            return S3Store(
                client,
                url.netloc,
                url.path,
                verify_by_listing=self.settings.delete_verify == "listing",
                declared_region=self.settings.store_region,
            )
        raise ValueError("store_url must be file://... or s3://bucket/prefix")

    @cached_property
    def vault(self) -> Vault:
        """Encryption paired with the store (``worker.objects.vault``)."""
        from worker.objects.vault import Vault

        return Vault(self.store, self.subject_keys, segment_size=self.settings.segment_size)

    @cached_property
    def records(self) -> ObjectRecords:
        """The one "seal, put, record the row with its TTL, audit" helper
        (``worker.objects.records``); TTLs from ``[retention]``."""
        from worker.objects.records import ObjectRecords
        from worker.retention.sweep import utcnow

        return ObjectRecords(self.db, self.vault, self.settings.retention.ttl, utcnow)

    @cached_property
    def api_keys(self) -> ApiKeyStore:
        """HTTP API keys (hashes only) and their webhook secrets (wrapped by the keyring); keys
        created without limits get ``[api] rate_per_second`` and ``burst``."""
        from worker.ledger.api_keys import ApiKeyStore, mark_revoked

        api = self.settings.api
        broker = self.settings.broker_url
        return ApiKeyStore(
            self.db,
            self.keyring,
            default_rate_per_second=api.rate_per_second,
            default_burst=api.burst,
            # the API caches principals with the Redis buckets: a revocation is announced there
            on_revoke=lambda key_id: mark_revoked(broker, key_id),
        )

    @cached_property
    def pseudonyms(self) -> Pseudonymizer:
        """Upstream subject id → keyed hash."""
        from worker.ledger.pseudonyms import Pseudonymizer

        return Pseudonymizer(self.db, self.keyring)

    @cached_property
    def subjects(self) -> SubjectRegistry:
        """Find-or-create of data subjects."""
        from worker.ledger.subjects import SubjectRegistry

        return SubjectRegistry(self.db, self.pseudonyms, self.subject_keys)

    def detector(self) -> FaceDetector:
        """The face model, loaded once per process on first use."""
        if self._detector is None:
            from pipelines.faces import CenterFaceDetector, DetectorConfig

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
        from pipelines.media import ImageLimits
        from pipelines.media.video import VideoLimits
        from worker.jobs.registry import Tools

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
        from worker.jobs.service import JobService, ServiceConfig

        s = self.settings
        return JobService(
            self.db,
            self.records,
            self.tools,
            deleter=self.deleter,
            sampler=self.sampler.sample,
            # a job that ended with a callback_url: its webhook delivery is sent (lazily built)
            on_ended=lambda job_id: self.webhooks.schedule(job_id),
            config=ServiceConfig(
                lease_seconds=s.lease_seconds,
                max_deliveries=s.max_deliveries,
                max_retries=s.max_retries,
                max_upload_bytes=s.max_upload_bytes,
            ),
        )

    @cached_property
    def sampler(self) -> Sampler:
        """Research sampling at job time (``worker.research.sampling.Sampler``)."""
        from worker.research.ksame.stager import Stager
        from worker.research.sampling import Sampler, SamplerConfig
        from worker.research.store import SampleWriter

        s = self.settings
        return Sampler(
            self.db,
            SampleWriter(self.db, self.records),
            Stager(self.db, self.records),
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
    def ksame(self) -> KSameBatcher:
        """The k-Same batch builder (``worker.research.ksame.batcher.KSameBatcher``)."""
        from worker.research.ksame.batcher import BatcherConfig, KSameBatcher
        from worker.research.store import SampleWriter
        from worker.retention.sweep import utcnow

        s = self.settings
        return KSameBatcher(
            self.db,
            self.vault,
            self.deleter,
            SampleWriter(self.db, self.records),
            self.detector,
            BatcherConfig(k=s.research.k_same_k),
            utcnow,
        )

    @cached_property
    def deleter(self) -> Deleter:
        """The one deletion path (store, then ledger, receipts)."""
        from worker.objects.deleter import Deleter
        from worker.retention.sweep import utcnow

        return Deleter(self.db, self.store, utcnow)

    @cached_property
    def rights(self) -> SubjectRights:
        """Erasure, export, consent withdrawal, legal holds."""
        from worker.retention.rights import SubjectRights

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
        from worker.retention.epochs import KeyEpochs

        return KeyEpochs(
            self.db,
            self.subject_keys,
            delay=self.settings.epoch_delay,
            rewrap_releases=lambda: int(self.releases.rewrap()),
        )

    @cached_property
    def sweeper(self) -> Sweeper:
        """The retention sweep."""
        from worker.retention.policy import parse_ttl
        from worker.retention.sweep import SweepConfig, Sweeper

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
    def releases(self) -> ReleaseService:
        """Research dataset releases; with a broker, a release of several shards is fanned out
        as a group of shard tasks and finished by a task (inline otherwise)."""
        from worker.research.release import ReleaseConfig, ReleaseService
        from worker.research.release.signing import SigningKeys

        s, d = self.settings, self.dispatcher
        return ReleaseService(
            self.db,
            self.records,
            self.keyring,
            SigningKeys(self.db, self.keyring),
            self.deleter,
            ReleaseConfig(
                default_k=s.research.release_k,
                shard_samples=s.research.shard_samples,
                segment_size=s.segment_size,
                max_sample_bytes=s.max_upload_bytes,
            ),
            fan_out=d.release_shards if d.remote else None,
            finish_later=d.finish_release if d.remote else None,
            # the finish task of a published release purges its revoked samples
            purge_later=d.finish_release if d.remote else None,
        )

    @cached_property
    def dispatcher(self) -> Dispatcher:
        """The dispatch port: a broker configured → tasks sent to it (Celery); none → every
        task runs here and now, on this container (the embedded default)."""
        if self.settings.eager:
            from worker.dispatch.inline import InlineDispatcher

            return InlineDispatcher(self)
        from worker.dispatch.broker import CeleryDispatcher

        return CeleryDispatcher(self.settings)

    @cached_property
    def webhooks(self) -> WebhookService:
        """Webhook deliveries of ended jobs (``facemedia.webhooks.deliver`` on the ``webhooks``
        queue; with no broker, the first attempt runs here and retries on a timer thread)."""
        from worker.webhooks.delivery import WebhookConfig, WebhookService

        s = self.settings
        return WebhookService(
            self.db,
            lambda key_id: self.api_keys.webhook_secret(key_id),
            WebhookConfig(
                max_attempts=s.api.webhook_max_attempts,
                backoff_s=s.api.webhook_backoff_s,
                # a Redis countdown past the visibility timeout would be delivered twice
                max_backoff_s=min(3600.0, 0.8 * s.visibility_timeout),
                timeout_s=s.api.webhook_timeout_s,
                allow_hosts=tuple(s.api.callback_allow_hosts),
            ),
            send=self.dispatcher.send,
        )

    @cached_property
    def client(self) -> JobClient:
        """The upstream-facing client; enqueues onto the media queue."""
        from worker.jobs.client import JobClient

        return JobClient(
            self.db,
            self.records,
            self.subjects,
            enqueue=self.dispatcher.enqueue,
            max_upload_bytes=self.settings.max_upload_bytes,
            send=self.dispatcher.send,
        )

    def preflight(self) -> dict[str, Any]:
        """Refuse to run against a bucket or KMS key outside the allowed regions (statement 6.1)."""
        from worker.storage.errors import RegionNotAllowed

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
        if "dispatcher" in self.__dict__:
            self.dispatcher.close()


_container: Container | None = None
_installed = False  # the container came from set_container, not from this process's settings


def get_container() -> Container:
    """This process's container, built from the settings on first call."""
    global _container
    if _container is None:
        from worker.settings import load_settings

        _container = Container(load_settings())
    return _container


def set_container(container: Container | None) -> None:
    """Install a container (tests, the CLI with explicit settings)."""
    global _container, _installed
    _container = container
    _installed = container is not None


def installed() -> bool:
    """True while a container installed with :func:`set_container` is this process's (a
    short command's DB-API reads then stay off: that container's ledger is the one to read)."""
    return _installed and _container is not None


def reset_container() -> None:
    """Forget this process's container (after fork: never share the parent's connections)."""
    global _container, _installed
    _container = None
    _installed = False


def checkpoint_current() -> None:
    """Checkpoint the audit log of this process's container, if one was built and appended
    (the end-of-command, end-of-task hook; never builds a container)."""
    if _container is not None:
        _container.checkpoint()
