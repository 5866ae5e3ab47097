"""Building, granting and revoking releases (the service side; the researcher side is
:mod:`.pull`).

A release is planned in one transaction (eligibility, k-anonymity, keys, the shard plan), built
shard by shard (inline, or as a Celery group of ``facemedia.research.build_shard`` tasks), and
finished once (``facemedia.research.finish_release``): manifest, datasheet, privacy report,
signed index, initial revocation list. The shard that completes the set wins a compare-and-set
on the release's status and triggers the finish, so no result backend is needed for the chord.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import os
import re
import tarfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO, cast

import structlog
from sqlalchemy import CursorResult, select, update
from sqlalchemy.exc import IntegrityError

from worker.crypto import (
    DecryptError,
    Envelope,
    InMemorySubjectKeyStore,
    KekRef,
    KeyNotFoundError,
    Keyring,
    SecretKey,
    SubjectKeys,
    WrappedKey,
    WrappedSubjectKey,
)
from worker.ids import new_id
from worker.ledger import audit
from worker.ledger.db import Database
from worker.ledger.models import (
    Release,
    ReleaseGrant,
    ResearchSample,
    Revocation,
    StoredObject,
    Subject,
    SubjectKeyRow,
)
from worker.retention.deleter import Deleter, Doomed
from worker.retention.locks import LedgerLock
from worker.storage.base import ObjectStore, check_key
from worker.storage.errors import ObjectMissing, TransientStorageError
from worker.storage.vault import Vault

from . import artifacts
from .errors import ReleaseError
from .kanon import QUASI, anonymize
from .keys import (
    ReleaseCipher,
    SigningKeys,
    canonical_json,
    load_public_key,
    release_key_context,
    seal_grant,
)

__all__ = [
    "ReleaseConfig",
    "ReleaseRequest",
    "ReleaseResult",
    "ReleaseService",
    "release_prefix",
]

log = structlog.get_logger("facemedia.research.release")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_EXT = {"image": "jpg", "video": "mp4"}
THUMBS_PER_SHARD = 8
THUMBS_MAX = 64
PURGE_LOCK_TTL = timedelta(minutes=30)
INDEX_FORMAT = "facemedia.release.index"
REVOCATIONS_FORMAT = "facemedia.release.revocations"


def release_prefix(release_id: str) -> str:
    """``releases/<release id>``."""
    return check_key(f"releases/{release_id}")


def file_key(release_id: str, name: str, generation: int) -> str:
    """The store key of release file ``name`` in ``generation``: generation 0 (as built)
    under ``files/``, each rebuild after a revocation under ``files/g<n>/`` (new objects, so
    the old ones can be deleted with every version)."""
    prefix = release_prefix(release_id)
    if generation == 0:
        return check_key(f"{prefix}/files/{name}")
    return check_key(f"{prefix}/files/g{generation}/{name}")


def shard_name(index: int) -> str:
    """The plaintext file name of shard ``index``."""
    return f"shard-{index:06d}.tar"


def utcnow() -> datetime:
    """UTC now."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class ReleaseRequest:
    """What to release: a unique name, k (None: the configured default), an operator filter."""

    name: str
    k: int | None = None
    operator: str | None = None
    max_suppression: float = 0.1


@dataclass(frozen=True)
class ReleaseResult:
    """What ``research release`` prints."""

    release_id: str
    name: str
    status: str
    samples: int
    k_achieved: int
    suppressed: int
    shards: int

    def to_json(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {
            "release_id": self.release_id,
            "name": self.name,
            "status": self.status,
            "samples": self.samples,
            "k_achieved": self.k_achieved,
            "suppressed": self.suppressed,
            "shards": self.shards,
        }


@dataclass(frozen=True)
class ReleaseConfig:
    """Defaults from ``[research]``."""

    default_k: int = 5
    shard_samples: int = 256
    segment_size: int = 65536
    max_sample_bytes: int = 512 * 1024 * 1024


@dataclass(frozen=True)
class _Published:
    """What :meth:`ReleaseService._publish` wrote."""

    public: dict[str, Any]
    manifest_sha256: str
    subjects: list[str]
    state_key: str
    objects: list[str]


@dataclass(frozen=True)
class _Keys:
    data: SecretKey = field(repr=False)
    pseudonym: SecretKey = field(repr=False)


class HashingReader:
    """Counts and hashes what is read through it (ciphertext on its way to or from the store);
    ``report(n)`` is told each chunk's size."""

    def __init__(self, src: BinaryIO, report: Callable[[int], None] | None = None) -> None:
        self._src = src
        self._report = report
        self.sha = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._src.read(n)
        self.sha.update(data)
        self.size += len(data)
        if self._report is not None:
            self._report(len(data))
        return data


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _thumbnail(data: bytes) -> str | None:
    """A small JPEG thumbnail (base64) of an image sample, or None."""
    import cv2
    import numpy as np

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        return None
    h, w = img.shape[:2]
    scale = 96 / max(h, w)
    small = cv2.resize(
        img, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA
    )
    ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 70])
    return base64.b64encode(bytes(buf)).decode() if ok else None


class ReleaseService:
    """Plans, builds, finishes, grants and revokes releases."""

    def __init__(
        self,
        db: Database,
        store: ObjectStore,
        vault: Vault,
        keyring: Keyring,
        signing: SigningKeys,
        deleter: Deleter,
        config: ReleaseConfig,
        *,
        fan_out: Callable[[str, int], None] | None = None,
        finish_later: Callable[[str], None] | None = None,
        purge_later: Callable[[str], None] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.store = store
        self.vault = vault
        self.keyring = keyring
        self.signing = signing
        self.deleter = deleter
        self.config = config
        self.fan_out = fan_out
        self.finish_later = finish_later
        # With a broker: send the purge of revoked samples as a task (``on_revoked`` then
        # returns after re-signing the lists); None: purge inline.
        self.purge_later = purge_later
        self.clock = clock

    # ----- keys ----------------------------------------------------------------------------

    def _keys(self, row: Release) -> _Keys:
        kek = KekRef(row.keyring_id, row.kek_version)
        data = self.keyring.unwrap(
            WrappedKey(kek, row.wrapped_data_key), release_key_context(row.id, "data")
        )
        pseud = self.keyring.unwrap(
            WrappedKey(kek, row.wrapped_pseudonym_key), release_key_context(row.id, "pseudonym")
        )
        return _Keys(SecretKey(data), SecretKey(pseud))

    def _cipher(self, release_id: str, keys: _Keys) -> ReleaseCipher:
        return ReleaseCipher(release_id, keys.data, self.config.segment_size)

    @staticmethod
    def subject_pseudonym(key: SecretKey, subject_id: str) -> str:
        """HMAC-SHA256(release pseudonym key, subject row id), hex."""
        return hmac.new(key.raw(), subject_id.encode(), hashlib.sha256).hexdigest()

    @staticmethod
    def sample_pseudonym(key: SecretKey, sample_id: str) -> str:
        """The release-specific sample id: HMAC-SHA256(key, "sample:" ‖ id), 32 hex."""
        return hmac.new(key.raw(), b"sample:" + sample_id.encode(), hashlib.sha256).hexdigest()[:32]

    # ----- planning ------------------------------------------------------------------------

    def _eligible(
        self, s: Any, operator: str | None
    ) -> tuple[list[tuple[ResearchSample, Subject]], dict[str, int]]:
        revoked = set(s.scalars(select(Revocation.subject_id)))
        query = (
            select(ResearchSample, Subject, StoredObject)
            .join(Subject, Subject.id == ResearchSample.subject_id)
            .join(StoredObject, StoredObject.id == ResearchSample.object_id)
        )
        if operator is not None:
            query = query.where(ResearchSample.operator == operator)
        counts: Counter[str] = Counter()
        keep: list[tuple[ResearchSample, Subject]] = []
        for sample, subject, obj in s.execute(query):
            counts["considered"] += 1
            if subject.erased_at is not None or subject.erase_requested_at is not None:
                counts["excluded_erased"] += 1
            elif subject.id in revoked or subject.consent_withdrawn_at is not None:
                counts["excluded_withdrawn"] += 1
            elif not subject.research_consent:
                counts["excluded_no_consent"] += 1
            elif subject.is_minor and not subject.guardian_consent:
                counts["excluded_minor"] += 1
            elif obj.deleted_at is not None or obj.object_class != "research":
                counts["excluded_deleted"] += 1
            elif sample.gate is not None and sample.gate.get("passed") is False:
                counts["excluded_gate"] += 1
            else:
                keep.append((sample, subject))
        return keep, dict(counts)

    def create(self, request: ReleaseRequest) -> ReleaseResult:
        """Plan the release and build it (inline, or fanned out when it has several shards)."""
        if not _NAME_RE.match(request.name):
            raise ReleaseError(
                "bad_request", "a release name is 1-64 of letters, digits, '.', '_' and '-'"
            )
        k = request.k if request.k is not None else self.config.default_k
        if k < 1:
            raise ReleaseError("bad_request", "k must be at least 1")
        if not 0.0 <= request.max_suppression <= 1.0:
            raise ReleaseError("bad_request", "max_suppression is a share from 0 to 1")
        release_id = new_id()
        data_key, pseud_key = os.urandom(32), os.urandom(32)
        wrapped_data = self.keyring.wrap(data_key, release_key_context(release_id, "data"))
        wrapped_pseud = self.keyring.wrap(pseud_key, release_key_context(release_id, "pseudonym"))
        if wrapped_data.kek != wrapped_pseud.kek:  # a rotation between the two wraps
            wrapped_data = self.keyring.wrap(data_key, release_key_context(release_id, "data"))
        pkey = SecretKey(pseud_key)
        t = self.clock()
        with self.db.session() as s:
            if s.scalars(select(Release.id).where(Release.name == request.name)).first():
                raise ReleaseError("exists", "a release with this name already exists")
            pairs, counts = self._eligible(s, request.operator)
            if not pairs:
                raise ReleaseError(
                    "no_eligible_samples",
                    "no eligible research samples (consent, withdrawal, erasure, guardian "
                    "consent and operator filter leave none)",
                )
            anon = anonymize([p[0].quasi or {} for p in pairs], k, request.max_suppression)
            if not anon.kept:
                raise ReleaseError(
                    "k_unreachable",
                    f"{len(pairs)} eligible samples cannot form an equivalence class of k={k}",
                )
            entries = sorted(
                (
                    {
                        "sample": pairs[i][0].id,
                        "rid": self.sample_pseudonym(pkey, pairs[i][0].id),
                        "quasi": dict(g),
                    }
                    for i, g in anon.kept.items()
                ),
                key=lambda e: str(e["rid"]),
            )
            size = self.config.shard_samples
            shards = [entries[i : i + size] for i in range(0, len(entries), size)]
            summary = {
                "plan": {"shards": shards},
                "levels": dict(anon.levels),
                "eligibility": counts,
                "k_requested": k,
            }
            s.add(
                Release(
                    id=release_id,
                    name=request.name,
                    status="building",
                    k_requested=k,
                    k_achieved=anon.k_achieved,
                    sample_count=len(entries),
                    suppressed=len(anon.suppressed),
                    operator=request.operator,
                    keyring_id=wrapped_data.kek.keyring_id,
                    kek_version=wrapped_data.kek.version,
                    wrapped_data_key=wrapped_data.blob,
                    wrapped_pseudonym_key=wrapped_pseud.blob,
                    summary=summary,
                    created_at=t,
                )
            )
            audit.append(
                s,
                "release.created",
                release_id,
                samples=len(entries),
                k=k,
                k_achieved=anon.k_achieved,
                suppressed=len(anon.suppressed),
                shards=len(shards),
                operator=request.operator,
            )
        log.info("release.planned", release_id=release_id, count=len(entries))
        if len(shards) > 1 and self.fan_out is not None:
            self.fan_out(release_id, len(shards))
        else:
            for i in range(len(shards)):
                self.build_shard(release_id, i, trigger_finish=False)
            self.finish(release_id)
        return self.result(release_id)

    # ----- objects -------------------------------------------------------------------------

    def _record(self, key: str, size: int | None, content_type: str | None = None) -> None:
        """A ``release`` object row for ``key`` (kept until the release is revoked)."""
        with self.db.session() as s:
            row = s.scalars(select(StoredObject).where(StoredObject.key == key)).first()
            t = self.clock()
            if row is None:
                try:
                    with s.begin_nested():
                        s.add(
                            StoredObject(
                                id=new_id(),
                                key=key,
                                object_class="release",
                                name=key.rsplit("/", 1)[-1][:64],
                                content_type=content_type,
                                size=size,
                                created_at=t,
                                stored_at=t,
                                expires_at=None,
                            )
                        )
                except IntegrityError:
                    pass
            else:
                row.size = size
                row.stored_at = t
                row.deleted_at = None

    def _put(
        self, key: str, body: BinaryIO | bytes, content_type: str | None = None
    ) -> tuple[str, int]:
        """Record then put ``body`` (already encrypted or public); (sha256, size) of the bytes."""
        self._record(key, None, content_type)
        src = io.BytesIO(body) if isinstance(body, bytes) else body
        hashing = HashingReader(src)
        self.store.put(key, cast(BinaryIO, hashing))
        self._record(key, hashing.size, content_type)
        return hashing.sha.hexdigest(), hashing.size

    def _get(self, key: str) -> bytes:
        stream = self.store.get(key)
        try:
            return stream.read()
        finally:
            stream.close()

    # ----- shards --------------------------------------------------------------------------

    def _load(self, release_id: str) -> Release:
        with self.db.session() as s:
            row = s.get(Release, release_id)
            if row is None:
                raise ReleaseError("not_found", "no such release")
            s.expunge(row)
            return row

    def build_shard(self, release_id: str, index: int, *, trigger_finish: bool = True) -> bool:
        """Write shard ``index`` and its part record; True if this call completed the set and
        triggered the finish.

        The task form (``trigger_finish``) runs only while the release is ``building`` and does
        not rewrite a shard whose part record exists (a redelivered task only re-checks
        completion), so nothing is rewritten under a finish that has read it. The finish itself
        rebuilds shards with ``trigger_finish=False``."""
        row = self._load(release_id)
        plan = (row.summary or {}).get("plan")
        if plan is None or row.status not in ("building", "finishing"):
            return False
        if not trigger_finish:
            self._write_shard(row, index)
            return False
        if row.status != "building":
            return False
        prefix = release_prefix(release_id)
        if not self.store.exists(f"{prefix}/parts/{index:06d}.json"):
            self._write_shard(row, index)
        done = sum(1 for _ in self.store.keys(f"{prefix}/parts/"))
        if done < len(plan["shards"]):
            return False
        with self.db.session() as s:
            won = cast(
                CursorResult[Any],
                s.execute(
                    update(Release)
                    .where(Release.id == release_id, Release.status == "building")
                    .values(status="finishing")
                ),
            ).rowcount
        if won != 1:
            return False
        if self.finish_later is not None:
            self.finish_later(release_id)
        else:
            self.finish(release_id)
        return True

    def _write_shard(self, row: Release, index: int) -> None:
        """Build, encrypt and store one shard and its (encrypted) part record."""
        release_id = row.id
        plan = (row.summary or {})["plan"]
        shards: list[list[dict[str, Any]]] = plan["shards"]
        excluded = set((row.summary or {}).get("excluded", []))
        keys = self._keys(row)
        cipher = self._cipher(release_id, keys)
        entries = [e for e in shards[index] if e["sample"] not in excluded]
        ids = [e["sample"] for e in entries]
        with self.db.session() as s:
            found = {
                sample.id: (sample, obj, subject)
                for sample, obj, subject in s.execute(
                    select(ResearchSample, StoredObject, Subject)
                    .join(StoredObject, StoredObject.id == ResearchSample.object_id)
                    .join(Subject, Subject.id == ResearchSample.subject_id)
                    .where(ResearchSample.id.in_(ids))
                )
            }
            for sample, obj, subject in found.values():
                s.expunge(sample)
                s.expunge(obj)
                s.expunge(subject)
            # The shard's subject keys in one query (not one ledger round trip per sample);
            # destroyed keys are left out, so their samples fail as shredded and are dropped.
            prefetched = InMemorySubjectKeyStore()
            for key_row in s.scalars(
                select(SubjectKeyRow).where(
                    SubjectKeyRow.key_id.in_({sub.key_id for _, _, sub in found.values()}),
                    SubjectKeyRow.wrapped.is_not(None),
                    SubjectKeyRow.destroyed_at.is_(None),
                )
            ):
                assert key_row.wrapped is not None
                prefetched.add(
                    WrappedSubjectKey(
                        key_row.key_id,
                        WrappedKey(
                            KekRef(key_row.keyring_id, key_row.kek_version), key_row.wrapped
                        ),
                    )
                )
        vault = Vault(
            self.store,
            Envelope(SubjectKeys(self.keyring, prefetched), segment_size=self.config.segment_size),
        )
        tar_buf = io.BytesIO()
        members: list[dict[str, Any]] = []
        dropped: list[str] = []
        thumbs: list[list[str]] = []  # [release sample id, base64 JPEG]
        name = shard_name(index)
        with tarfile.open(fileobj=tar_buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for e in entries:
                got = found.get(e["sample"])
                if got is None:
                    dropped.append(e["sample"])
                    continue
                sample, obj, subject = got
                if (
                    obj.deleted_at is not None
                    or not subject.research_consent
                    or (subject.erased_at is not None or subject.consent_withdrawn_at is not None)
                ):
                    dropped.append(e["sample"])  # withdrawn or erased since the plan
                    continue
                try:
                    media = vault.read(
                        obj.key, "research", obj.job_id, self.config.max_sample_bytes
                    )
                except (ObjectMissing, DecryptError, KeyNotFoundError):
                    # gone since the plan, or its subject key was shredded (erased)
                    dropped.append(e["sample"])
                    continue
                rid = e["rid"]
                ext = _EXT.get(sample.media_kind, "bin")
                gate = sample.gate or {}
                record = {
                    "sample": rid,
                    "subject": self.subject_pseudonym(keys.pseudonym, subject.id),
                    "media_kind": sample.media_kind,
                    "operator": sample.operator,
                    "faces": sample.faces,
                    "gate": {
                        k: gate.get(k)
                        for k in ("passed", "residual_faces", "frames_checked", "reason")
                    },
                    "quasi": e["quasi"],
                }
                doc = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
                for member, data, kind in (
                    (f"{rid}.{ext}", media, "media"),
                    (f"{rid}.json", doc, "json"),
                ):
                    tar.addfile(_tarinfo(member, len(data)), io.BytesIO(data))
                    members.append(
                        {
                            "shard": name,
                            "member": member,
                            "kind": kind,
                            "sample": rid,
                            "subject": record["subject"],
                            "media_kind": sample.media_kind,
                            "operator": sample.operator,
                            "size": len(data),
                            "sha256": hashlib.sha256(data).hexdigest(),
                            **e["quasi"],
                            "_gate": record["gate"],
                            "_minor": bool(subject.is_minor),
                        }
                    )
                if sample.media_kind == "image" and len(thumbs) < THUMBS_PER_SHARD:
                    thumb = _thumbnail(media)
                    if thumb is not None:
                        thumbs.append([rid, thumb])
        plain = tar_buf.getvalue()
        prefix = release_prefix(release_id)
        key = f"{prefix}/files/{name}"
        stored_sha, stored_size = self._put(key, cipher.encrypt_stream(key, io.BytesIO(plain)))
        part = {
            "index": index,
            "shard": {
                "name": name,
                "size": len(plain),
                "sha256": hashlib.sha256(plain).hexdigest(),
                "stored_sha256": stored_sha,
                "stored_size": stored_size,
            },
            "members": members,
            "dropped": dropped,
            "thumbnails": thumbs,
        }
        part_key = f"{prefix}/parts/{index:06d}.json"
        self._put(part_key, cipher.seal(part_key, json.dumps(part).encode()))
        log.info("release.shard_built", release_id=release_id, count=len(members) // 2)

    # ----- finishing -----------------------------------------------------------------------

    def _parts(self, release_id: str, cipher: ReleaseCipher, count: int) -> list[dict[str, Any]]:
        prefix = release_prefix(release_id)
        parts = []
        for i in range(count):
            key = f"{prefix}/parts/{i:06d}.json"
            parts.append(json.loads(cipher.open(key, self._get(key))))
        return parts

    def finish(self, release_id: str) -> ReleaseResult:
        """Manifest, datasheet, privacy report, signed index; publish. Idempotent.

        A transient storage fault propagates (the task retries); any other failure marks the
        release ``failed`` (audited) and propagates."""
        try:
            return self._finish(release_id)
        except TransientStorageError:
            raise
        except Exception as exc:
            with self.db.session() as s:
                live = s.get(Release, release_id)
                if live is not None and live.status != "published":
                    live.status = "failed"
                    code = exc.code if isinstance(exc, ReleaseError) else "internal_error"
                    audit.append(s, "release.failed", release_id, error_code=code)
            log.error("release.failed", release_id=release_id, exc_type=type(exc).__name__)
            raise

    def _finish(self, release_id: str) -> ReleaseResult:
        row = self._load(release_id)
        if row.status == "published":
            # A finish interrupted after publishing, or (the same task, sent by
            # ``on_revoked`` with a broker) revoked samples to purge from the store.
            self._drop_parts(release_id)
            self.purge(release_id)
            return self.result(release_id)
        summary = dict(row.summary or {})
        plan = summary["plan"]["shards"]
        keys = self._keys(row)
        cipher = self._cipher(release_id, keys)
        parts = self._parts(release_id, cipher, len(plan))
        # Samples dropped after the plan (withdrawn meanwhile) may leave a class below k:
        # suppress such classes too and rebuild the shards that held them.
        k = row.k_requested
        for _ in range(3):
            members = [m for p in parts for m in p["members"] if m["kind"] == "media"]
            sizes = Counter(tuple(m[a] for a in QUASI) for m in members)
            small = {c for c, n in sizes.items() if n < k}
            if not small:
                break
            rids = {m["sample"] for m in members if tuple(m[a] for a in QUASI) in small}
            excluded = set(summary.get("excluded", []))
            affected = set()
            for i, shard in enumerate(plan):
                for e in shard:
                    if e["rid"] in rids:
                        excluded.add(e["sample"])
                        affected.add(i)
            summary["excluded"] = sorted(excluded)
            with self.db.session() as s:
                live = s.get(Release, release_id)
                assert live is not None
                live.summary = dict(summary)
            for i in sorted(affected):
                self.build_shard(release_id, i, trigger_finish=False)
            parts = self._parts(release_id, cipher, len(plan))
        dropped = sum(len(p["dropped"]) for p in parts)
        state: dict[str, Any] = {
            "members": [m for p in parts for m in p["members"]],
            "shards": [p["shard"] | {"generation": 0} for p in parts],
            "thumbnails": [t for p in parts for t in p["thumbnails"] if isinstance(t, list)],
            "base": {
                "k_requested": k,
                "levels": summary.get("levels", {}),
                "eligibility": summary.get("eligibility", {}) | {"dropped_after_plan": dropped},
                "suppressed": row.suppressed + len(summary.get("excluded", [])),
            },
        }
        pub = self._publish(row, keys, state, 0)
        # The revocation list exists before the release is published (a pull right after
        # publication finds it); a withdrawal in between is caught by the refresh below and
        # its samples purged from the stored objects by :meth:`purge`.
        revoked, _seq = self._sign_revocations(release_id, pub.subjects)
        t = self.clock()
        public = pub.public
        final = {k2: v for k2, v in public.items() if k2 not in ("name", "release_id")}
        final |= {
            "subject_pseudonyms": pub.subjects,
            "revoked": revoked,
            "purged": [],
            "generation": 0,
            "state_key": pub.state_key,
            "objects": pub.objects,
        }
        with self.db.session() as s:
            live = s.get(Release, release_id)
            assert live is not None
            live.summary = final
            live.status = "published"
            live.published_at = t
            live.manifest_sha256 = pub.manifest_sha256
            live.sample_count = public["samples"]
            live.k_achieved = public["k_achieved"]
            live.suppressed = public["suppressed"]
            audit.append(
                s,
                "release.published",
                release_id,
                samples=public["samples"],
                k_achieved=public["k_achieved"],
                suppressed=public["suppressed"],
                manifest_sha256=pub.manifest_sha256,
            )
        self._write_revocations(release_id)
        self._drop_parts(release_id)
        log.info("release.published", release_id=release_id, count=public["samples"])
        self.purge(release_id)
        return self.result(release_id)

    def _publish(
        self, row: Release, keys: _Keys, state: dict[str, Any], generation: int
    ) -> _Published:
        """Write one generation of a release: its documents (manifest, datasheet, privacy
        report) and its sealed build state under generation-specific keys, then the signed
        index naming every file with its generation. The shards of ``state`` are already
        stored."""
        release_id = row.id
        cipher = self._cipher(release_id, keys)
        members = state["members"]
        media = [m for m in members if m["kind"] == "media"]
        base = state["base"]
        sizes = Counter(tuple(m[a] for a in QUASI) for m in media)
        hist = Counter(sizes.values())
        gate: Counter[str] = Counter()
        for m in media:
            g = m.get("_gate") or {}
            gate["passed"] += 1 if g.get("passed", True) else 0
            gate["residual_faces"] += int(g.get("residual_faces") or 0)
            gate["frames_checked"] += int(g.get("frames_checked") or 0)
        subjects = sorted({m["subject"] for m in media})
        public = {
            "release_id": release_id,
            "name": row.name,
            "created_at": row.created_at.isoformat(),
            "samples": len(media),
            "subjects": len(subjects),
            "shards": len(state["shards"]),
            "k_requested": base["k_requested"],
            "k_achieved": min(sizes.values()) if sizes else 0,
            "suppressed": base["suppressed"],
            "levels": base["levels"],
            "histogram": {str(a): b for a, b in sorted(hist.items())},
            "gate": dict(gate),
            "eligibility": base["eligibility"],
            "minor_samples": sum(1 for m in media if m.get("_minor")),
            "operator": row.operator,
            "generation": generation,
            "revoked_samples_removed": base.get("revoked_removed", 0),
        }
        samples_view = [
            {
                "quasi": {a: m[a] for a in QUASI},
                "media_kind": m["media_kind"],
                "operator": m["operator"],
            }
            for m in media
        ]
        prefix = release_prefix(release_id)
        shards_meta = state["shards"]
        docs = {
            "manifest.parquet": artifacts.manifest_parquet(members, shards_meta),
            "datasheet.md": artifacts.datasheet(public, samples_view).encode(),
            "privacy_report.html": artifacts.privacy_report(
                public, [t[1] for t in state["thumbnails"]][:THUMBS_MAX]
            ).encode(),
        }
        files = [
            {
                "name": sh["name"],
                "kind": "shard",
                "generation": int(sh.get("generation", 0)),
                "size": sh["size"],
                "sha256": sh["sha256"],
                "stored_size": sh["stored_size"],
                "stored_sha256": sh["stored_sha256"],
            }
            for sh in shards_meta
        ]
        for fname, data in docs.items():
            key = file_key(release_id, fname, generation)
            stored_sha, stored_size = self._put(key, cipher.seal(key, data))
            files.append(
                {
                    "name": fname,
                    "kind": fname.split(".", 1)[0],
                    "generation": generation,
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "stored_size": stored_size,
                    "stored_sha256": stored_sha,
                }
            )
        state_key = f"{prefix}/state/{generation:06d}.json"
        self._put(state_key, cipher.seal(state_key, json.dumps(state).encode()))
        manifest_sha = hashlib.sha256(docs["manifest.parquet"]).hexdigest()
        signer = self.signing.public_pem()
        index = {
            "format": INDEX_FORMAT,
            "version": 2,
            "release_id": release_id,
            "name": row.name,
            "created_at": row.created_at.isoformat(),
            "generation": generation,
            "samples": len(media),
            "k_achieved": public["k_achieved"],
            "manifest_sha256": manifest_sha,
            "signer_sha256": hashlib.sha256(signer).hexdigest(),
            "encryption": "FMENC/1, release data key (see docs/ENCRYPTION.md)",
            "files": sorted(files, key=lambda f: str(f["name"])),
        }
        body = canonical_json(index)
        self._put(f"{prefix}/signer.pub", signer)
        self._put(f"{prefix}/index.json", body)
        self._put(f"{prefix}/index.sig", self.signing.sign(body))
        objects = sorted(
            [file_key(release_id, f["name"], int(f["generation"])) for f in files] + [state_key]
        )
        return _Published(public, manifest_sha, subjects, state_key, objects)

    def _delete_prefix(self, prefix: str, reason: str) -> int:
        """Delete every live object under ``prefix`` through the deleter; the count deleted."""
        with self.db.session() as s:
            rows = s.scalars(
                select(StoredObject).where(
                    StoredObject.key.like(prefix + "%"), StoredObject.deleted_at.is_(None)
                )
            )
            doomed = [Doomed.of(r) for r in rows]
        deleted = 0
        for start in range(0, len(doomed), 1000):
            deleted += self.deleter.delete(doomed[start : start + 1000], reason).deleted
        return deleted

    def _drop_parts(self, release_id: str) -> None:
        self._delete_prefix(release_prefix(release_id) + "/parts/", "release_build")

    def result(self, release_id: str) -> ReleaseResult:
        """The release's current figures."""
        row = self._load(release_id)
        summary = row.summary or {}
        shards = summary.get("shards")
        if shards is None:
            shards = len(summary.get("plan", {}).get("shards", []))
        return ReleaseResult(
            row.id,
            row.name,
            row.status,
            row.sample_count,
            row.k_achieved or 0,
            row.suppressed,
            int(shards),
        )

    def find(self, ref: str) -> str:
        """A release id from an id or a name."""
        with self.db.session() as s:
            row = (
                s.get(Release, ref) or s.scalars(select(Release).where(Release.name == ref)).first()
            )
            if row is None:
                raise ReleaseError("not_found", "no such release")
            return row.id

    def list_releases(self) -> list[dict[str, Any]]:
        """Every release, newest first."""
        with self.db.session() as s:
            return [
                {
                    "release_id": r.id,
                    "name": r.name,
                    "status": r.status,
                    "samples": r.sample_count,
                    "k_achieved": r.k_achieved,
                    "suppressed": r.suppressed,
                    "created_at": r.created_at.isoformat(),
                }
                for r in s.scalars(select(Release).order_by(Release.created_at.desc()))
            ]

    # ----- access --------------------------------------------------------------------------

    def grant(self, ref: str, public_key: bytes) -> dict[str, Any]:
        """Wrap the release data key to a researcher's X25519 public key; audited."""
        release_id = self.find(ref)
        pub = load_public_key(public_key)
        row = self._load(release_id)
        if row.revoked_at is not None:
            raise ReleaseError("not_published", "the release was revoked")
        keys = self._keys(row)
        doc = seal_grant(release_id, keys.data, pub)
        fp = doc["fingerprint"]
        self._put(
            f"{release_prefix(release_id)}/grants/{fp}.json",
            json.dumps(doc, sort_keys=True, indent=1).encode(),
        )
        with self.db.session() as s:
            exists = s.scalars(
                select(ReleaseGrant).where(
                    ReleaseGrant.release_id == release_id, ReleaseGrant.fingerprint == fp
                )
            ).first()
            if exists is None:
                s.add(
                    ReleaseGrant(
                        id=new_id(), release_id=release_id, fingerprint=fp, created_at=self.clock()
                    )
                )
            audit.append(s, "release.granted", release_id, fingerprint=fp)
        return {"release_id": release_id, "fingerprint": fp, "new": exists is None}

    def revoke(self, ref: str) -> dict[str, Any]:
        """Withdraw a whole release: every object under its prefix deleted through the deleter
        (every version, receipts), status ``revoked``; audited. Copies already pulled are the
        holders' to delete (the datasheet says so)."""
        release_id = self.find(ref)
        deleted = self._delete_prefix(release_prefix(release_id) + "/", "release_revoked")
        with self.db.session() as s:
            live = s.get(Release, release_id)
            assert live is not None
            already = live.revoked_at is not None
            live.revoked_at = live.revoked_at or self.clock()
            live.status = "revoked"
            audit.append(s, "release.revoked", release_id, deleted=deleted)
        return {"release_id": release_id, "deleted": deleted, "already_revoked": already}

    def rewrap(self) -> int:
        """Re-wrap every live release's data and pseudonym keys, and the signing key, under the
        keyring's current KEK (run after ``facemedia keys rotate``, before retiring the old
        KEK version); returns the number of releases re-wrapped."""
        with self.db.session() as s:
            ids = list(s.scalars(select(Release.id).where(Release.revoked_at.is_(None))))
        count = 0
        for release_id in ids:
            row = self._load(release_id)
            keys = self._keys(row)
            data = self.keyring.wrap(keys.data.raw(), release_key_context(release_id, "data"))
            pseud = self.keyring.wrap(
                keys.pseudonym.raw(), release_key_context(release_id, "pseudonym")
            )
            with self.db.session() as s:
                live = s.get(Release, release_id)
                assert live is not None
                live.keyring_id = data.kek.keyring_id
                live.kek_version = data.kek.version
                live.wrapped_data_key = data.blob
                live.wrapped_pseudonym_key = pseud.blob
            count += 1
        self.signing.rewrap()
        with self.db.session() as s:
            audit.append(s, "release.keys_rewrapped", None, count=count)
        return count

    # ----- revocations ---------------------------------------------------------------------

    def _revoked_in(self, keys: _Keys, members: Iterable[str]) -> list[str]:
        """The release pseudonyms, among ``members``, of every subject on the revocation list."""
        present = set(members)
        with self.db.session() as s:
            subjects = list(s.scalars(select(Revocation.subject_id)))
        return sorted(
            p
            for p in (self.subject_pseudonym(keys.pseudonym, sid) for sid in subjects)
            if p in present
        )

    def _sign_revocations(self, release_id: str, members: Iterable[str]) -> tuple[list[str], int]:
        """Sign and store a new ``revocations.json`` with the next sequence number: the
        release pseudonyms, among ``members``, of every revoked subject. (revoked, sequence).

        The sequence number is taken by an UPDATE of the release row, which holds the row's
        lock (the database's write lock on SQLite) while the list is computed and stored: a
        higher number is always written later and lists a superset, so no re-signing ever
        puts an older list over a newer one."""
        prefix = release_prefix(release_id)
        json_key, sig_key = f"{prefix}/revocations.json", f"{prefix}/revocations.sig"
        for key in (json_key, sig_key):
            self._record(key, None)
        present = set(members)
        # keys unwrapped and the signing key loaded before the row lock is taken (loading
        # may read the ledger on its own connection)
        keys = self._keys(self._load(release_id))
        self.signing.public()
        with self.db.session() as s:
            s.execute(
                update(Release)
                .where(Release.id == release_id)
                .values(revocation_seq=Release.revocation_seq + 1)
            )
            seq = int(
                s.scalars(select(Release.revocation_seq).where(Release.id == release_id)).one()
            )
            live = s.get(Release, release_id)
            assert live is not None
            subjects = list(s.scalars(select(Revocation.subject_id)))
            revoked = sorted(
                p
                for p in (self.subject_pseudonym(keys.pseudonym, sid) for sid in subjects)
                if p in present
            )
            doc = {
                "format": REVOCATIONS_FORMAT,
                "version": 2,
                "release_id": release_id,
                "sequence": seq,
                "generated_at": self.clock().isoformat(),
                "subjects": revoked,
            }
            body = canonical_json(doc)
            self.store.put(json_key, io.BytesIO(body))
            signature = self.signing.sign(body)
            self.store.put(sig_key, io.BytesIO(signature))
            summary = dict(live.summary or {})
            summary["revoked"] = revoked
            live.summary = summary
            audit.append(s, "release.revocations", release_id, revoked=len(revoked), sequence=seq)
        self._record(json_key, len(body))
        self._record(sig_key, len(signature))
        return revoked, seq

    def _write_revocations(self, release_id: str, *, force: bool = False) -> int | None:
        row = self._load(release_id)
        if row.status != "published" or row.revoked_at is not None:
            return None
        summary = dict(row.summary or {})
        members = summary.get("subject_pseudonyms", [])
        revoked = self._revoked_in(self._keys(row), members)
        if not force and revoked == summary.get("revoked", []):
            return len(revoked)
        got, _seq = self._sign_revocations(release_id, members)
        return len(got)

    def _published_ids(self) -> list[str]:
        with self.db.session() as s:
            return list(
                s.scalars(
                    select(Release.id).where(
                        Release.status == "published", Release.revoked_at.is_(None)
                    )
                )
            )

    def refresh_revocations(self, refs: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Re-sign the revocation list of every published release (or those named) whose
        revoked set changed, and purge revoked samples still stored (inline). Run by
        ``research revocations refresh``; also the manual retry of a failed purge."""
        ids = [self.find(r) for r in refs] if refs is not None else self._published_ids()
        out = []
        for rid in ids:
            n = self._write_revocations(rid)
            if n is not None:
                got = self.purge(rid)
                out.append({"release_id": rid, "revoked": n, "purged_samples": got["removed"]})
        return out

    def purge_pending(self) -> list[dict[str, Any]]:
        """Purge every published release whose signed list names samples still stored (a
        purge whose task was lost, or ran out of retries). Run by beat; cheap when nothing is
        pending: one read of each published release's summary."""
        out = []
        for rid in self._published_ids():
            if self.pending_purge(rid):
                out.append(self.purge(rid))
        return out

    # ----- purging revoked samples from the store ---------------------------------------

    def _stale(self, release_id: str, current: Iterable[str]) -> list[Doomed]:
        """Live release objects of earlier generations (files and build state) that the
        current generation no longer names."""
        prefix = release_prefix(release_id)
        keep = set(current)
        with self.db.session() as s:
            rows = s.scalars(
                select(StoredObject).where(
                    StoredObject.deleted_at.is_(None),
                    StoredObject.key.like(prefix + "/files/%")
                    | StoredObject.key.like(prefix + "/state/%"),
                )
            )
            return [Doomed.of(r) for r in rows if r.key not in keep]

    def pending_purge(self, release_id: str) -> bool:
        """True while a revoked subject's samples, or an earlier generation's objects, may
        still be in the store."""
        row = self._load(release_id)
        if row.status != "published" or row.revoked_at is not None:
            return False
        summary = row.summary or {}
        if set(summary.get("revoked", [])) - set(summary.get("purged", [])):
            return True
        return bool(self._stale(release_id, summary.get("objects", [])))

    def _rewrite_shard(
        self, cipher: ReleaseCipher, shard: dict[str, Any], gone: set[str], generation: int
    ) -> dict[str, Any]:
        """Shard ``shard`` without the members of the ``gone`` samples, stored as a new object
        of ``generation``; its new index entry. Every other member keeps its bytes (and so
        its manifest row)."""
        release_id = cipher.release_id
        old_key = file_key(release_id, shard["name"], int(shard.get("generation", 0)))
        plain = io.BytesIO()
        src = self.store.get(old_key)
        try:
            cipher.decrypt(old_key, src, cast(BinaryIO, plain))
        finally:
            src.close()
        plain.seek(0)
        out = io.BytesIO()
        with (
            tarfile.open(fileobj=plain, mode="r:") as tin,
            tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tout,
        ):
            for info in tin:
                if info.name.split(".", 1)[0] in gone:
                    continue
                fh = tin.extractfile(info)
                data = fh.read() if fh is not None else b""
                tout.addfile(_tarinfo(info.name, len(data)), io.BytesIO(data))
        body = out.getvalue()
        new_key = file_key(release_id, shard["name"], generation)
        stored_sha, stored_size = self._put(
            new_key, cipher.encrypt_stream(new_key, io.BytesIO(body))
        )
        return {
            "name": shard["name"],
            "size": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "stored_sha256": stored_sha,
            "stored_size": stored_size,
            "generation": generation,
        }

    def purge(self, release_id: str) -> dict[str, Any]:
        """Remove every revoked subject's samples from what the release stores.

        The shards holding them are rebuilt without them as new objects (a new generation's
        keys); the manifest (their rows gone), datasheet (counts), privacy report (contact
        sheet) and sealed build state are regenerated, the index re-signed; then every object
        of earlier generations is deleted through the deleter (every version, receipts). The
        release data key is kept: no stored object it opens holds a revoked sample any more.
        Idempotent; a crash anywhere is finished by the next call. One pass at a time per
        release (a ledger lock); the holder repeats its pass for revocations that arrived
        meanwhile, so a caller locked out has nothing left to do."""
        lock = LedgerLock(self.db, f"release-purge:{release_id}", PURGE_LOCK_TTL, self.clock)
        if not lock.acquire():
            log.info("release.purge_locked_out", release_id=release_id)
            return {"release_id": release_id, "removed": 0, "deleted_objects": 0}
        try:
            total = {"release_id": release_id, "removed": 0, "deleted_objects": 0}
            for _ in range(5):
                got = self._purge_once(release_id)
                total["removed"] += got["removed"]
                total["deleted_objects"] += got["deleted_objects"]
                row = self._load(release_id)
                summary = row.summary or {}
                if not set(summary.get("revoked", [])) - set(summary.get("purged", [])):
                    break
                lock.renew()
            return total
        finally:
            lock.release()

    def _purge_once(self, release_id: str) -> dict[str, Any]:
        row = self._load(release_id)
        result = {"release_id": release_id, "removed": 0, "deleted_objects": 0}
        if row.status != "published" or row.revoked_at is not None:
            return result
        summary = dict(row.summary or {})
        state_key = summary.get("state_key")
        if state_key is None:  # published before revocations reached the store
            log.warning("release.purge_unsupported", release_id=release_id)
            return result
        revoked = set(summary.get("revoked", []))
        if revoked - set(summary.get("purged", [])):
            keys = self._keys(row)
            cipher = self._cipher(release_id, keys)
            state = json.loads(cipher.open(state_key, self._get(state_key)))
            members: list[dict[str, Any]] = state["members"]
            gone = {m["sample"] for m in members if m["subject"] in revoked}
            if gone:
                generation = int(summary.get("generation", 0)) + 1
                affected = {m["shard"] for m in members if m["sample"] in gone}
                state["shards"] = [
                    self._rewrite_shard(cipher, sh, gone, generation)
                    if sh["name"] in affected
                    else sh
                    for sh in state["shards"]
                ]
                state["members"] = [m for m in members if m["sample"] not in gone]
                state["thumbnails"] = [t for t in state["thumbnails"] if t[0] not in gone]
                base = dict(state["base"])
                base["revoked_removed"] = int(base.get("revoked_removed", 0)) + len(gone)
                state["base"] = base
                pub = self._publish(row, keys, state, generation)
                public = pub.public
                summary |= {k2: v for k2, v in public.items() if k2 not in ("name", "release_id")}
                summary |= {
                    "generation": generation,
                    "state_key": pub.state_key,
                    "objects": pub.objects,
                    "manifest_sha256": pub.manifest_sha256,
                }
                result["removed"] = len(gone)
            summary["purged"] = sorted(revoked)
            with self.db.session() as s:
                live = s.get(Release, release_id)
                assert live is not None
                # the revoked set may have grown meanwhile: keep the newest list, mark only
                # what this pass removed
                fresh = dict(live.summary or {})
                fresh |= {k2: v for k2, v in summary.items() if k2 != "revoked"}
                live.summary = fresh
                if gone:
                    live.sample_count = summary["samples"]
                    live.k_achieved = summary["k_achieved"]
                    live.manifest_sha256 = summary["manifest_sha256"]
                    audit.append(
                        s,
                        "release.purged",
                        release_id,
                        removed=len(gone),
                        generation=summary["generation"],
                    )
        stale = self._stale(release_id, summary.get("objects", []))
        if stale:
            batch = self.deleter.delete(stale, "release_revocation")
            result["deleted_objects"] = batch.deleted
            if batch.unverified:
                raise TransientStorageError(
                    "an earlier generation's release object is not verified deleted"
                )
        if result["removed"]:
            log.info("release.purged", release_id=release_id, count=result["removed"])
        return result

    def on_revoked(self, subject_id: str) -> None:
        """Hook for :class:`SubjectRights` (consent withdrawn or subject erased): re-sign the
        published revocation lists, then purge the revoked samples from the stored releases:
        inline (embedded), or as the release's finish task on the ``research`` queue (with a
        broker; retried with backoff, and again by every later revocation and by ``research
        revocations refresh``). An inline purge that fails is logged and left pending for
        those retries: the erasure itself never fails because of it."""
        del subject_id  # the lists are recomputed from the ledger's revocations
        for rid in self._published_ids():
            try:
                self._write_revocations(rid)
                if not self.pending_purge(rid):
                    continue
                if self.purge_later is not None:
                    self.purge_later(rid)
                else:
                    self.purge(rid)
            except Exception as exc:  # retried later (see above); never fails an erasure
                log.error("release.purge_failed", release_id=rid, exc_type=type(exc).__name__)
