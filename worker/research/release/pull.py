"""The researcher's side: pull a release from the store, verify it, apply revocations.

Uses the store read-only and no ledger. Layout of a pulled directory::

    DIR/index.json, index.sig, signer.pub         the signed file index and the signer's key
    DIR/revocations.json, revocations.sig         the signed revocation list at the last pull
    DIR/shard-000000.tar ...                      decrypted WebDataset shards
    DIR/manifest.parquet, datasheet.md, privacy_report.html
    DIR/revoked.json                              what revocation removed locally (by shard)

Trust: ``--signer PUB`` pins the service's signing key. Without it the first pull trusts the
``signer.pub`` published next to the release and keeps it in DIR (trust on first use); every
later pull and ``verify`` of that DIR requires the same key.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from worker.storage.base import ObjectStore
from worker.storage.errors import ObjectMissing

from .artifacts import read_manifest
from .errors import ReleaseError
from .keys import (
    ReleaseCipher,
    fingerprint,
    load_private_key,
    load_signer,
    open_grant,
    signer_pem,
    verify_signature,
)
from .service import INDEX_FORMAT, REVOCATIONS_FORMAT, HashingReader, _tarinfo, release_prefix

__all__ = ["PullResult", "VerifyResult", "pull", "verify"]

Progress = Callable[[str, int, int], None]
"""``progress(file name, bytes done, bytes total)``."""

_CHUNK = 1 << 20
_FILE_NAME = re.compile(r"^[a-z0-9_-][a-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class PullResult:
    """What a pull did."""

    release_id: str
    files: int
    downloaded: int
    skipped: int
    bytes: int
    samples: int
    revoked_subjects: int
    removed_samples: int

    def to_json(self) -> dict[str, Any]:
        """JSON-ready view."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class VerifyResult:
    """What ``verify`` checked."""

    release_id: str
    files: int
    samples: int
    removed_samples: int

    def to_json(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {"ok": True, **self.__dict__}


def _sha_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    part = path.with_name(path.name + ".part")
    part.write_bytes(data)
    os.replace(part, path)


def _get(store: ObjectStore, key: str, what: str) -> bytes:
    try:
        stream = store.get(key)
    except ObjectMissing:
        raise ReleaseError("not_found", f"{what} is not in the store") from None
    try:
        return stream.read()
    finally:
        stream.close()


class _HashingFile:
    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self.sha = hashlib.sha256()

    def write(self, data: Any) -> int:
        self.sha.update(data)
        return self._fh.write(data)


def _trusted_signer(out: Path, published: bytes, pinned: bytes | None) -> bytes:
    """The signer PEM to trust: pinned, else the one kept in DIR, else the published (TOFU)."""
    if pinned is not None:
        want = signer_pem(load_signer(pinned))
    elif (out / "signer.pub").exists():
        want = signer_pem(load_signer((out / "signer.pub").read_bytes()))
    else:
        want = signer_pem(load_signer(published))
    if signer_pem(load_signer(published)) != want:
        raise ReleaseError(
            "bad_signature", "the release is signed by another key than the trusted signer"
        )
    return want


def _load_index(data: bytes, sig: bytes, signer: bytes, release_id: str | None) -> dict[str, Any]:
    verify_signature(load_signer(signer), data, sig, "index.json")
    index: dict[str, Any] = json.loads(data)
    if index.get("format") != INDEX_FORMAT or (
        release_id and index.get("release_id") != release_id
    ):
        raise ReleaseError("bad_signature", "index.json is not this release's index")
    names = [str(f.get("name", "")) for f in index.get("files", [])]
    if any(not _FILE_NAME.match(n) for n in names) or len(set(names)) != len(names):
        # signed, but a file name must never reach outside DIR or shadow another file
        raise ReleaseError("bad_request", "index.json lists an invalid file name")
    return index


def _load_revocations(data: bytes, sig: bytes, signer: bytes, release_id: str) -> list[str]:
    verify_signature(load_signer(signer), data, sig, "revocations.json")
    doc = json.loads(data)
    if doc.get("format") != REVOCATIONS_FORMAT or doc.get("release_id") != release_id:
        raise ReleaseError("bad_signature", "revocations.json is not this release's list")
    return list(doc.get("subjects", []))


def _member_shas(manifest: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """shard name → member name → manifest row."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for row in manifest:
        if row.get("kind") in ("media", "json"):
            out.setdefault(str(row["shard"]), {})[str(row["member"])] = row
    return out


def _check_shard_members(
    path: Path, expected: dict[str, dict[str, Any]], removed: set[str]
) -> None:
    """A shard rewritten by revocation: every member is as listed, and exactly the removed
    samples are missing."""
    seen: set[str] = set()
    try:
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                row = expected.get(info.name)
                fh = tar.extractfile(info)
                if row is None or fh is None:
                    raise ReleaseError(
                        "checksum_mismatch", f"{path.name}: unexpected member", path=path.name
                    )
                if hashlib.sha256(fh.read()).hexdigest() != row["sha256"]:
                    raise ReleaseError(
                        "checksum_mismatch",
                        f"{path.name}: a member's bytes changed",
                        path=path.name,
                    )
                seen.add(info.name)
    except tarfile.TarError:
        raise ReleaseError(
            "checksum_mismatch", f"{path.name} is not a tar", path=path.name
        ) from None
    missing = {m for m, row in expected.items() if m not in seen}
    if {expected[m]["sample"] for m in missing} != removed or any(
        expected[m]["sample"] not in removed for m in missing
    ):
        raise ReleaseError("checksum_mismatch", f"{path.name}: members missing", path=path.name)


def _file_ok(
    out: Path,
    entry: dict[str, Any],
    members: dict[str, dict[str, dict[str, Any]]] | None,
    removed: dict[str, list[str]],
) -> bool:
    path = out / entry["name"]
    if not path.is_file():
        return False
    if _sha_file(path) == entry["sha256"]:
        return True
    if entry.get("kind") == "shard" and entry["name"] in removed and members is not None:
        try:
            _check_shard_members(path, members.get(entry["name"], {}), set(removed[entry["name"]]))
        except ReleaseError:
            return False
        return True
    return False


def _apply_revocations(
    out: Path, revoked: list[str], manifest: list[dict[str, Any]]
) -> tuple[dict[str, list[str]], int]:
    """Remove every sample of a revoked subject from the local shards; record what went."""
    record_path = out / "revoked.json"
    record: dict[str, Any] = (
        json.loads(record_path.read_text()) if record_path.exists() else {"shards": {}}
    )
    removed: dict[str, list[str]] = {k: list(v) for k, v in record.get("shards", {}).items()}
    gone = set(revoked)
    todo: dict[str, set[str]] = {}
    for row in manifest:
        if row.get("kind") == "media" and row.get("subject") in gone:
            shard = str(row["shard"])
            if row["sample"] not in removed.get(shard, []):
                todo.setdefault(shard, set()).add(str(row["sample"]))
    newly = 0
    for shard, samples in sorted(todo.items()):
        path = out / shard
        part = path.with_name(path.name + ".part")
        with (
            tarfile.open(path, "r:") as src,
            tarfile.open(part, "w", format=tarfile.USTAR_FORMAT) as dst,
        ):
            for info in src:
                if info.name.split(".", 1)[0] in samples:
                    continue
                fh = src.extractfile(info)
                data = fh.read() if fh is not None else b""
                dst.addfile(_tarinfo(info.name, len(data)), io.BytesIO(data))
        os.replace(part, path)
        removed[shard] = sorted(set(removed.get(shard, [])) | samples)
        newly += len(samples)
    record = {"shards": removed, "subjects": sorted(gone)}
    _atomic_write(record_path, json.dumps(record, indent=1, sort_keys=True).encode())
    return removed, newly


def pull(
    store: ObjectStore,
    release_id: str,
    private_key: bytes,
    out: Path,
    *,
    signer: bytes | None = None,
    progress: Progress | None = None,
) -> PullResult:
    """Download, verify, decrypt and apply revocations; resumable."""
    out.mkdir(parents=True, exist_ok=True)
    prefix = release_prefix(release_id)
    published = _get(store, f"{prefix}/signer.pub", "the release")
    trusted = _trusted_signer(out, published, signer)
    index_bytes = _get(store, f"{prefix}/index.json", "the release index")
    index_sig = _get(store, f"{prefix}/index.sig", "the index signature")
    index = _load_index(index_bytes, index_sig, trusted, release_id)
    key = load_private_key(private_key)
    fp = fingerprint(key.public_key())
    try:
        grant = json.loads(_get(store, f"{prefix}/grants/{fp}.json", "grant"))
    except ReleaseError:
        raise ReleaseError(
            "no_grant",
            f"no grant for key {fp[:16]}: ask the release owner to run "
            "`facemedia research grant` with your public key",
        ) from None
    cipher = ReleaseCipher(release_id, open_grant(release_id, grant, key))
    if not (out / "signer.pub").exists():
        _atomic_write(out / "signer.pub", trusted)
    _atomic_write(out / "index.json", index_bytes)
    _atomic_write(out / "index.sig", index_sig)
    removed_before: dict[str, list[str]] = {}
    if (out / "revoked.json").exists():
        removed_before = json.loads((out / "revoked.json").read_text()).get("shards", {})
    members: dict[str, dict[str, dict[str, Any]]] | None = None
    manifest_path = out / "manifest.parquet"
    if manifest_path.is_file() and _sha_file(manifest_path) == index["manifest_sha256"]:
        members = _member_shas(read_manifest(manifest_path.read_bytes()))
    downloaded = skipped = total_bytes = 0
    files = sorted(index["files"], key=lambda f: (f["kind"] == "shard", f["name"]))
    for entry in files:
        name = entry["name"]
        if _file_ok(out, entry, members, removed_before):
            skipped += 1
            continue
        obj = f"{prefix}/files/{name}"
        path = out / name
        part = path.with_name(name + ".part")
        stored = entry["stored_size"]

        def report(n: int, _name: str = name, _total: int = stored) -> None:
            if progress is not None:
                progress(_name, n, _total)

        try:
            raw = store.get(obj)
        except ObjectMissing:
            raise ReleaseError(
                "missing_file", f"{name} is missing from the store", path=name
            ) from None
        tee = HashingReader(raw, report)
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                hashing = _HashingFile(cast(BinaryIO, fh))
                try:
                    cipher.decrypt(obj, tee, cast(BinaryIO, hashing))
                except ReleaseError:
                    raise
                except Exception as exc:
                    raise ReleaseError(
                        "decrypt_failed",
                        f"{name} does not decrypt under the release key",
                        path=name,
                    ) from exc
        finally:
            raw.close()
        if (
            tee.sha.hexdigest() != entry["stored_sha256"]
            or hashing.sha.hexdigest() != entry["sha256"]
        ):
            part.unlink(missing_ok=True)
            raise ReleaseError(
                "checksum_mismatch", f"{name} does not match the signed index", path=name
            )
        os.replace(part, path)
        if name in removed_before:  # a fresh copy of a shard revocation had rewritten
            removed_before.pop(name)
        downloaded += 1
        total_bytes += tee.size
        if name == "manifest.parquet":
            members = _member_shas(read_manifest(path.read_bytes()))
    if (out / "revoked.json").exists():
        record = json.loads((out / "revoked.json").read_text())
        record["shards"] = removed_before
        _atomic_write(out / "revoked.json", json.dumps(record, indent=1, sort_keys=True).encode())
    manifest = read_manifest(manifest_path.read_bytes())
    rev_bytes = _get(store, f"{prefix}/revocations.json", "the revocation list")
    rev_sig = _get(store, f"{prefix}/revocations.sig", "the revocation list signature")
    revoked = _load_revocations(rev_bytes, rev_sig, trusted, release_id)
    _atomic_write(out / "revocations.json", rev_bytes)
    _atomic_write(out / "revocations.sig", rev_sig)
    removed, newly = _apply_revocations(out, revoked, manifest)
    samples = sum(1 for r in manifest if r.get("kind") == "media")
    gone = sum(len(v) for v in removed.values())
    return PullResult(
        release_id=release_id,
        files=len(files),
        downloaded=downloaded,
        skipped=skipped,
        bytes=total_bytes,
        samples=samples - gone,
        revoked_subjects=len(revoked),
        removed_samples=newly,
    )


def verify(out: Path, *, signer: bytes | None = None) -> VerifyResult:
    """Re-check a pulled release: signatures, and every byte of every file against the signed
    index (shards revocation rewrote: every remaining member against the signed manifest)."""
    for name in ("signer.pub", "index.json", "index.sig"):
        if not (out / name).is_file():
            raise ReleaseError("missing_file", f"{name} is missing", path=name)
    kept = (out / "signer.pub").read_bytes()
    trusted = _trusted_signer(out, kept, signer)
    index_bytes = (out / "index.json").read_bytes()
    index = _load_index(index_bytes, (out / "index.sig").read_bytes(), trusted, None)
    release_id = str(index["release_id"])
    if (out / "revocations.json").is_file():
        if not (out / "revocations.sig").is_file():
            raise ReleaseError("missing_file", "revocations.sig is missing", path="revocations.sig")
        _load_revocations(
            (out / "revocations.json").read_bytes(),
            (out / "revocations.sig").read_bytes(),
            trusted,
            release_id,
        )
    removed: dict[str, list[str]] = {}
    if (out / "revoked.json").is_file():
        removed = json.loads((out / "revoked.json").read_text()).get("shards", {})
    entries = sorted(index["files"], key=lambda f: (f["kind"] == "shard", f["name"]))
    members: dict[str, dict[str, dict[str, Any]]] | None = None
    for entry in entries:
        name = entry["name"]
        path = out / name
        if not path.is_file():
            raise ReleaseError("missing_file", f"{name} is missing", path=name)
        if _sha_file(path) == entry["sha256"]:
            if name == "manifest.parquet":
                members = _member_shas(read_manifest(path.read_bytes()))
            continue
        if entry["kind"] == "shard" and name in removed and members is not None:
            _check_shard_members(path, members.get(name, {}), set(removed[name]))
            continue
        raise ReleaseError(
            "checksum_mismatch", f"{name} does not match the signed index", path=name
        )
    manifest = read_manifest((out / "manifest.parquet").read_bytes())
    gone = sum(len(v) for v in removed.values())
    return VerifyResult(
        release_id=release_id,
        files=len(entries),
        samples=sum(1 for r in manifest if r.get("kind") == "media") - gone,
        removed_samples=gone,
    )
