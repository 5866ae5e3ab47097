"""Writing a release's shards: building one shard from its planned samples (re-checked
against consent, withdrawal and erasure, read through the container's vault over the shard's
subject keys fetched in one query) with its encrypted part record; the task form that claims
the finish once the set is complete (a compare-and-set ``building`` → ``finishing``); reading
and dropping the part records; and rewriting a stored shard without some samples (the purge's
new generation)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from typing import Any, BinaryIO, cast

import structlog
from sqlalchemy import CursorResult, select, update

from worker.ledger.models import Release, ResearchSample, StoredObject, Subject
from worker.objects.errors import ObjectCorrupt, ObjectMissing, ObjectShredded
from worker.objects.layout import file_key, part_key, parts_prefix
from worker.objects.release_cipher import ReleaseCipher

from .context import ReleaseContext, subject_pseudonym
from .format import MEDIA_EXT, copy_tar_without, shard_name, tarinfo

__all__ = ["THUMBS_PER_SHARD", "build", "drop_parts", "read_parts", "rebuild", "rewrite"]

log = structlog.get_logger("facemedia.research.release")

THUMBS_PER_SHARD = 8


def _thumbnail(data: bytes) -> str | None:
    """A JPEG thumbnail (base64, 192 px on the long side: the privacy report's contact sheet
    shows it at about that size) of an image sample, or None."""
    import cv2
    import numpy as np

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        return None
    h, w = img.shape[:2]
    scale = min(1.0, 192 / max(h, w))
    small = cv2.resize(
        img, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA
    )
    ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return base64.b64encode(bytes(buf)).decode() if ok else None


def _buildable(row: Release) -> bool:
    plan = (row.summary or {}).get("plan")
    return plan is not None and row.status in ("building", "finishing")


def rebuild(ctx: ReleaseContext, release_id: str, index: int) -> None:
    """(Re)write shard ``index`` while the release is building or finishing (the inline build
    and the finish's rebuild of shards that held too-small classes)."""
    row = ctx.load(release_id)
    if _buildable(row):
        _write(ctx, row, index)


def build(ctx: ReleaseContext, release_id: str, index: int) -> bool:
    """The task form: write shard ``index`` unless its part record exists, only while the
    release is ``building`` (a redelivered task only re-checks completion, so nothing is
    rewritten under a finish that has read it); True if this call completed the set and won
    the release's move to ``finishing`` (the caller then runs or sends the finish)."""
    row = ctx.load(release_id)
    if not _buildable(row) or row.status != "building":
        return False
    plan = (row.summary or {})["plan"]
    if not ctx.vault.exists(part_key(release_id, index)):
        _write(ctx, row, index)
    done = len(ctx.vault.keys(parts_prefix(release_id)))
    if done < len(plan["shards"]):
        return False
    with ctx.db.session() as s:
        won = cast(
            CursorResult[Any],
            s.execute(
                update(Release)
                .where(Release.id == release_id, Release.status == "building")
                .values(status="finishing")
            ),
        ).rowcount
    return bool(won == 1)


def _write(ctx: ReleaseContext, row: Release, index: int) -> None:
    """Build, encrypt and store one shard and its (encrypted) part record."""
    release_id = row.id
    plan = (row.summary or {})["plan"]
    shards: list[list[dict[str, Any]]] = plan["shards"]
    excluded = set((row.summary or {}).get("excluded", []))
    keys = ctx.keys(row)
    cipher = ctx.cipher(release_id, keys)
    entries = [e for e in shards[index] if e["sample"] not in excluded]
    ids = [e["sample"] for e in entries]
    with ctx.db.session() as s:
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
    # The shard's subject keys in one query (not one ledger round trip per sample); destroyed
    # keys are left out, so their samples do not open and are dropped.
    vault = ctx.records.reader({sub.key_id for _, _, sub in found.values()})
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
                media = vault.read(obj.key, "research", obj.job_id, ctx.config.max_sample_bytes)
            except (ObjectMissing, ObjectCorrupt, ObjectShredded):
                # gone since the plan, or its subject key was shredded (erased)
                dropped.append(e["sample"])
                continue
            rid = e["rid"]
            ext = MEDIA_EXT.get(sample.media_kind, "bin")
            gate = sample.gate or {}
            record = {
                "sample": rid,
                "subject": subject_pseudonym(keys.pseudonym, subject.id),
                "media_kind": sample.media_kind,
                "operator": sample.operator,
                "faces": sample.faces,
                "gate": {
                    k: gate.get(k) for k in ("passed", "residual_faces", "frames_checked", "reason")
                },
                "quasi": e["quasi"],
            }
            doc = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
            for member, data, kind in (
                (f"{rid}.{ext}", media, "media"),
                (f"{rid}.json", doc, "json"),
            ):
                tar.addfile(tarinfo(member, len(data)), io.BytesIO(data))
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
    key = file_key(release_id, name, 0)
    stored_sha, stored_size = ctx.put(key, cipher.encrypt_stream(key, io.BytesIO(plain)))
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
    pkey = part_key(release_id, index)
    ctx.put(pkey, cipher.seal(pkey, json.dumps(part).encode()))
    log.info("release.shard_built", release_id=release_id, count=len(members) // 2)


def read_parts(
    ctx: ReleaseContext, release_id: str, cipher: ReleaseCipher, count: int
) -> list[dict[str, Any]]:
    """The decrypted part records of shards ``0 .. count - 1``."""
    parts = []
    for i in range(count):
        key = part_key(release_id, i)
        parts.append(json.loads(cipher.open(key, ctx.get(key))))
    return parts


def drop_parts(ctx: ReleaseContext, release_id: str) -> None:
    """Delete the part records (once the release is published)."""
    ctx.delete_prefix(parts_prefix(release_id), "release_build")


def rewrite(
    ctx: ReleaseContext,
    cipher: ReleaseCipher,
    shard: dict[str, Any],
    gone: set[str],
    generation: int,
) -> dict[str, Any]:
    """Shard ``shard`` without the members of the ``gone`` samples, stored as a new object
    of ``generation``; its new index entry. Every other member keeps its bytes (and so
    its manifest row)."""
    release_id = cipher.release_id
    old_key = file_key(release_id, shard["name"], int(shard.get("generation", 0)))
    plain = io.BytesIO()
    src = ctx.vault.raw(old_key)
    try:
        cipher.decrypt(old_key, src, cast(BinaryIO, plain))
    finally:
        src.close()
    plain.seek(0)
    with tarfile.open(fileobj=plain, mode="r:") as tin:
        body, _dropped = copy_tar_without(tin, gone)
    new_key = file_key(release_id, shard["name"], generation)
    stored_sha, stored_size = ctx.put(new_key, cipher.encrypt_stream(new_key, io.BytesIO(body)))
    return {
        "name": shard["name"],
        "size": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
        "stored_sha256": stored_sha,
        "stored_size": stored_size,
        "generation": generation,
    }
