"""The researcher's side: pin the service's signer, pull a release from the store, verify it.

Uses the store read-only and no ledger. Layout of a pulled directory (0700, files 0600)::

    DIR/index.json, index.sig, signer.pub         the signed file index (signer.pub: a copy of
                                                  the pinned key that verified it, for people)
    DIR/revocations.json, revocations.sig         the newest signed revocation list
    DIR/shard-000000.tar ...                      decrypted WebDataset shards
    DIR/manifest.parquet, datasheet.md, privacy_report.html

**Trust.** ``pull`` and ``verify`` require a pinned signer: ``--signer FILE`` for one call, or a
key pinned before with ``facemedia research trust SIGNER.pub`` (kept in
``$XDG_CONFIG_HOME/facemedia/known_signers``, default ``~/.config``). Nothing is trusted on
first use, and ``verify`` never reads the ``signer.pub`` inside the directory it checks.

**Revocation.** Every signed ``revocations.json`` carries a sequence number that only grows;
the newest seen per release is kept next to ``known_signers`` (``revocation_sequences.json``),
and ``pull`` and ``verify`` refuse an older list (a rollback). The samples to remove are derived
from the signed list and the signed manifest alone: every media row whose subject pseudonym is
listed. ``pull`` removes them from the local shards (the service also rebuilds its stored
shards without them, and a later pull fetches those); ``verify`` requires each shard to be
byte-identical to the signed index and hold no revoked sample, or to hold exactly the signed
manifest's members minus the revoked samples.

**Names.** Every name taken from the index or the manifest (file, shard, member) must be a plain
file name before it is used; the release id must be an opaque id. Files are written through
:mod:`worker.private_files` (temporary file ``O_EXCL | O_NOFOLLOW`` 0600, renamed into place);
a failed pull removes its partial files (and any ``*.part`` left by older versions).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from worker.objects.layout import (
    RELEASES,
    file_key,
    grant_key,
    index_key,
    index_sig_key,
    release_prefix,
    revocations_key,
    revocations_sig_key,
)
from worker.objects.release_cipher import ReleaseCipher
from worker.private_files import (
    PrivateFileError,
    atomic_write_private,
    private_dir,
    private_output,
)
from worker.storage.base import ObjectStore
from worker.storage.errors import InvalidKey, ObjectMissing

from .artifacts import read_manifest
from .errors import ReleaseError
from .format import INDEX_FORMAT, REVOCATIONS_FORMAT, HashingReader, copy_tar_without
from .keys import (
    fingerprint,
    load_private_key,
    load_signer,
    open_grant,
    signer_pem,
    verify_signature,
)

__all__ = [
    "PullResult",
    "TrustResult",
    "VerifyResult",
    "config_dir",
    "pull",
    "trust",
    "verify",
]

Progress = Callable[[str, int, int], None]
"""``progress(file name, bytes done, bytes total)``."""

KNOWN_SIGNERS = "known_signers"
SEQUENCES = "revocation_sequences.json"

_CHUNK = 1 << 20
_FILE_NAME = re.compile(r"^[a-z0-9_-][a-z0-9_.-]{0,127}$")
_MEMBER = re.compile(r"^[A-Za-z0-9_-]{1,64}\.[a-z0-9]{1,8}$")
_PSEUDONYM = re.compile(r"^[0-9a-f]{64}$")
_RESERVED = frozenset(
    {"index.json", "index.sig", "signer.pub", "revocations.json", "revocations.sig"}
)


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
    revocation_sequence: int

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
    revocation_sequence: int

    def to_json(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {"ok": True, **self.__dict__}


@dataclass(frozen=True)
class TrustResult:
    """What ``research trust`` pinned."""

    fingerprint: str
    path: str
    new: bool

    def to_json(self) -> dict[str, Any]:
        """JSON-ready view."""
        return dict(self.__dict__)


# ----- the researcher's config: pinned signers and the newest list seen ---------------------


def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/facemedia`` (if absolute), else ``~/.config/facemedia``."""
    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".config"
    return base / "facemedia"


def _raw(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _known_signers(config: Path) -> list[Ed25519PublicKey]:
    """The pinned keys: one ``ed25519 <base64 raw key> [comment]`` per line."""
    path = config / KNOWN_SIGNERS
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    keys = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "ed25519":
            try:
                keys.append(Ed25519PublicKey.from_public_bytes(base64.b64decode(parts[1])))
            except ValueError:
                continue
    return keys


def trust(signer: bytes, *, config: Path | None = None) -> TrustResult:
    """Pin the service's release-signing key (PEM) in ``known_signers``."""
    cfg = config or config_dir()
    key = load_signer(signer)
    fp = fingerprint(key)
    try:
        private_dir(cfg)
        known = _known_signers(cfg)
        new = all(_raw(k) != _raw(key) for k in known)
        if new:
            path = cfg / KNOWN_SIGNERS
            old = path.read_text() if path.exists() else ""
            line = f"ed25519 {base64.b64encode(_raw(key)).decode()} sha256:{fp}\n"
            atomic_write_private(path, (old + line).encode())
    except PrivateFileError as exc:
        raise ReleaseError("bad_request", str(exc)) from None
    return TrustResult(fp, str(cfg / KNOWN_SIGNERS), new)


def _trusted(pinned: bytes | None, config: Path) -> list[Ed25519PublicKey]:
    """``--signer`` if given, else every pinned key; none is refused (no trust on first use)."""
    if pinned is not None:
        return [load_signer(pinned)]
    keys = _known_signers(config)
    if not keys:
        raise ReleaseError(
            "untrusted_signer",
            "no release signer is pinned: get the service's signing key from the release "
            "owner (`facemedia research signing-key --out signer.pub`), check it, and pin it "
            "with `facemedia research trust signer.pub` (or pass --signer signer.pub)",
        )
    return keys


def _verify_any(keys: list[Ed25519PublicKey], data: bytes, sig: bytes, what: str) -> bytes:
    """The PEM of the pinned key whose signature ``sig`` is; ``bad_signature`` if none."""
    for key in keys:
        try:
            verify_signature(key, data, sig, what)
        except ReleaseError:
            continue
        return signer_pem(key)
    raise ReleaseError("bad_signature", f"{what} is not signed by a pinned signer")


def _seen(config: Path) -> dict[str, int]:
    try:
        data = json.loads((config / SEQUENCES).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return {str(k): int(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _check_sequence(config: Path, release_id: str, seq: int) -> None:
    newest = _seen(config).get(release_id, 0)
    if seq < newest:
        raise ReleaseError(
            "rollback",
            f"the revocation list (sequence {seq}) is older than one already seen for this "
            f"release (sequence {newest}): refusing a rolled-back list",
        )


def _remember_sequence(config: Path, release_id: str, seq: int) -> None:
    seen = _seen(config)
    if seen.get(release_id, -1) >= seq:
        return
    seen[release_id] = seq
    try:
        private_dir(config)
        atomic_write_private(config / SEQUENCES, json.dumps(seen, sort_keys=True).encode())
    except PrivateFileError as exc:
        raise ReleaseError("bad_request", str(exc)) from None


# ----- signed documents -----------------------------------------------------------------------


def _parse_index(data: bytes, release_id: str | None) -> dict[str, Any]:
    """The (signature-checked) index, with every file name and generation validated."""
    index: dict[str, Any] = json.loads(data)
    if index.get("format") != INDEX_FORMAT or (
        release_id and index.get("release_id") != release_id
    ):
        raise ReleaseError("bad_signature", "index.json is not this release's index")
    rid = str(index.get("release_id", ""))
    try:
        release_prefix(rid)
    except InvalidKey:
        raise ReleaseError("malformed_release", "index.json names an invalid release id") from None
    files = index.get("files")
    if not isinstance(files, list):
        raise ReleaseError("malformed_release", "index.json lists no files")
    names = []
    for f in files:
        name = f.get("name") if isinstance(f, dict) else None
        gen = f.get("generation", 0) if isinstance(f, dict) else None
        if (
            not isinstance(name, str)
            or not _FILE_NAME.match(name)
            or ".." in name
            or name in _RESERVED
            or name.endswith((".part", ".tmp"))
            or not isinstance(gen, int)
            or isinstance(gen, bool)
            or not 0 <= gen < 10**9
        ):
            # signed, but a name must never reach outside DIR or shadow another file
            raise ReleaseError("malformed_release", "index.json lists an invalid file name")
        names.append(name)
    if len(set(names)) != len(names) or "manifest.parquet" not in names:
        raise ReleaseError("malformed_release", "index.json lists an invalid set of files")
    return index


def _load_revocations(
    keys: list[Ed25519PublicKey], data: bytes, sig: bytes, release_id: str
) -> tuple[list[str], int]:
    """(revoked subject pseudonyms, sequence number) of a signature-checked list."""
    _verify_any(keys, data, sig, "revocations.json")
    doc = json.loads(data)
    if doc.get("format") != REVOCATIONS_FORMAT or doc.get("release_id") != release_id:
        raise ReleaseError("bad_signature", "revocations.json is not this release's list")
    subjects = doc.get("subjects", [])
    seq = doc.get("sequence", 0)
    if (
        not isinstance(subjects, list)
        or not all(isinstance(p, str) and _PSEUDONYM.match(p) for p in subjects)
        or not isinstance(seq, int)
        or isinstance(seq, bool)
        or seq < 0
    ):
        raise ReleaseError("malformed_release", "revocations.json is malformed")
    return list(subjects), seq


def _checked_manifest(data: bytes, index: dict[str, Any]) -> list[dict[str, Any]]:
    """The manifest's rows, every shard and member name validated against the index."""
    try:
        rows = read_manifest(data)
    except Exception:
        raise ReleaseError(
            "checksum_mismatch", "manifest.parquet is unreadable", path="manifest.parquet"
        ) from None
    shards = {f["name"] for f in index["files"] if f.get("kind") == "shard"}
    for row in rows:
        if row.get("shard") not in shards:
            raise ReleaseError("malformed_release", "manifest.parquet names an invalid shard")
        if row.get("kind") in ("media", "json"):
            member, sample = row.get("member"), row.get("sample")
            if (
                not isinstance(member, str)
                or not _MEMBER.match(member)
                or member.split(".", 1)[0] != sample
            ):
                raise ReleaseError("malformed_release", "manifest.parquet names an invalid member")
    return rows


def _members(manifest: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """shard name → member name → manifest row."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for row in manifest:
        if row.get("kind") in ("media", "json"):
            out.setdefault(str(row["shard"]), {})[str(row["member"])] = row
    return out


def _removed(manifest: list[dict[str, Any]], revoked: list[str]) -> dict[str, set[str]]:
    """shard name → the samples the signed revocation list removes from it (derived from the
    signed list and the signed manifest only)."""
    gone = set(revoked)
    out: dict[str, set[str]] = {}
    for row in manifest:
        if row.get("kind") == "media" and row.get("subject") in gone:
            out.setdefault(str(row["shard"]), set()).add(str(row["sample"]))
    return out


# ----- files ----------------------------------------------------------------------------------


def _sha_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


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


def _tar_members(path: Path) -> dict[str, str]:
    """member name → SHA-256 of a local tar; a duplicate or non-file member fails."""
    out: dict[str, str] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                fh = tar.extractfile(info) if info.isfile() else None
                if fh is None or info.name in out:
                    raise ReleaseError(
                        "checksum_mismatch", f"{path.name}: unexpected member", path=path.name
                    )
                out[info.name] = hashlib.sha256(fh.read()).hexdigest()
    except tarfile.TarError:
        raise ReleaseError(
            "checksum_mismatch", f"{path.name} is not a tar", path=path.name
        ) from None
    return out


def _check_shard_members(
    path: Path, expected: dict[str, dict[str, Any]], removed: set[str]
) -> None:
    """A shard revocation rewrote: exactly the signed manifest's members of this shard minus
    every member of the removed samples, each with its signed bytes."""
    got = _tar_members(path)
    want = {m: row for m, row in expected.items() if row["sample"] not in removed}
    if set(got) != set(want):
        raise ReleaseError(
            "checksum_mismatch",
            f"{path.name}: its members are not the signed manifest's minus the revoked samples",
            path=path.name,
        )
    for member, sha in got.items():
        if sha != want[member]["sha256"]:
            raise ReleaseError(
                "checksum_mismatch", f"{path.name}: a member's bytes changed", path=path.name
            )


def _shard_ok(
    path: Path,
    entry: dict[str, Any],
    members: dict[str, dict[str, dict[str, Any]]],
    removed: dict[str, set[str]],
) -> str:
    """``full`` (as indexed), ``revoked`` (as indexed minus the revoked samples) or raise."""
    name = entry["name"]
    if _sha_file(path) == entry["sha256"]:
        return "full"
    if removed.get(name):
        _check_shard_members(path, members.get(name, {}), removed[name])
        return "revoked"
    raise ReleaseError("checksum_mismatch", f"{name} does not match the signed index", path=name)


def _drop_revoked(path: Path, samples: set[str]) -> int:
    """Rewrite a local shard without the members of ``samples``; how many samples went."""
    with tarfile.open(path, "r:") as src:
        body, dropped = copy_tar_without(src, samples)
    if dropped:
        atomic_write_private(path, body)
    return len(dropped)


def _remove_partials(out: Path) -> None:
    """Remove partial downloads: ``*.part`` (older versions) and private_output's temps."""
    try:
        entries = list(out.iterdir())
    except OSError:
        return
    for path in entries:
        name = path.name
        if name.endswith(".part") or (name.startswith(".") and name.endswith(".tmp")):
            try:
                if path.is_file() and not path.is_symlink():
                    path.unlink()
            except OSError:
                continue


def _private(out: Path) -> Path:
    try:
        return private_dir(out)
    except PrivateFileError as exc:
        raise ReleaseError("bad_request", str(exc)) from None


def _download(
    store: ObjectStore,
    cipher: ReleaseCipher,
    entry: dict[str, Any],
    path: Path,
    progress: Progress | None,
) -> int:
    """Fetch, decrypt and check one file into ``path`` (atomically, 0600); bytes fetched."""
    name = entry["name"]
    obj = file_key(cipher.release_id, name, int(entry.get("generation", 0)))
    stored = entry["stored_size"]

    def report(n: int) -> None:
        if progress is not None:
            progress(name, n, stored)

    try:
        raw = store.get(obj)
    except ObjectMissing:
        raise ReleaseError("missing_file", f"{name} is missing from the store", path=name) from None
    tee = HashingReader(raw, report)
    try:
        with private_output(path) as fh:
            hashing = _HashingFile(fh)
            try:
                cipher.decrypt(obj, tee, cast(BinaryIO, hashing))
            except ReleaseError:
                raise
            except Exception as exc:
                raise ReleaseError(
                    "decrypt_failed", f"{name} does not decrypt under the release key", path=name
                ) from exc
            if (
                tee.sha.hexdigest() != entry["stored_sha256"]
                or hashing.sha.hexdigest() != entry["sha256"]
            ):
                raise ReleaseError(
                    "checksum_mismatch", f"{name} does not match the signed index", path=name
                )
    except PrivateFileError as exc:
        raise ReleaseError("bad_request", str(exc), path=name) from None
    finally:
        raw.close()
    return tee.size


# ----- pull and verify ------------------------------------------------------------------------


def resolve(store: ObjectStore, ref: str, keys: list[Ed25519PublicKey]) -> str:
    """The release id of ``ref``, a release's id or its name. The researcher has no ledger: a
    name is looked up among the indexes in the store, and only an index signed by a pinned
    signer counts (a forged index cannot claim a name)."""
    try:
        if store.exists(index_key(ref)):
            return ref
    except InvalidKey:
        pass
    found: set[str] = set()
    for key in store.keys(RELEASES):
        parts = key.split("/")
        if len(parts) != 3 or parts[2] != "index.json" or parts[1] in found:
            continue
        try:
            data = _get(store, key, "the release index")
            _verify_any(keys, data, _get(store, index_sig_key(parts[1]), "a signature"), "")
            named = json.loads(data).get("name") == ref
        except (ReleaseError, ValueError, InvalidKey):
            continue
        if named:
            found.add(parts[1])
    if not found:
        raise ReleaseError(
            "not_found", "no published release with this id or name (signed by a pinned signer)"
        )
    if len(found) > 1:
        raise ReleaseError("bad_request", "several releases carry this name: give the id")
    return found.pop()


def pull(
    store: ObjectStore,
    release_id: str,
    private_key: bytes,
    out: Path,
    *,
    signer: bytes | None = None,
    config: Path | None = None,
    progress: Progress | None = None,
) -> PullResult:
    """Download, verify, decrypt and apply the signed revocation list; resumable. Requires a
    pinned signer (``signer`` or ``research trust``); refuses a rolled-back list.
    ``release_id`` may also be the release's name (:func:`resolve`)."""
    cfg = config or config_dir()
    keys = _trusted(signer, cfg)
    release_id = resolve(store, release_id, keys)
    try:
        release_prefix(release_id)
    except InvalidKey:
        raise ReleaseError("bad_request", "not a release id") from None
    out = _private(out)
    try:
        return _pull(store, release_id, private_key, out, keys, cfg, progress)
    except BaseException:
        _remove_partials(out)
        raise


def _pull(
    store: ObjectStore,
    release_id: str,
    private_key: bytes,
    out: Path,
    keys: list[Ed25519PublicKey],
    cfg: Path,
    progress: Progress | None,
) -> PullResult:
    index_bytes = _get(store, index_key(release_id), "the release index")
    index_sig = _get(store, index_sig_key(release_id), "the index signature")
    signer_used = _verify_any(keys, index_bytes, index_sig, "index.json")
    index = _parse_index(index_bytes, release_id)
    rev_bytes = _get(store, revocations_key(release_id), "the revocation list")
    rev_sig = _get(store, revocations_sig_key(release_id), "the revocation list signature")
    revoked, seq = _load_revocations(keys, rev_bytes, rev_sig, release_id)
    _check_sequence(cfg, release_id, seq)
    key = load_private_key(private_key)
    fp = fingerprint(key.public_key())
    try:
        grant = json.loads(_get(store, grant_key(release_id, fp), "grant"))
    except ReleaseError:
        raise ReleaseError(
            "no_grant",
            f"no grant for key {fp[:16]}: ask the release owner to run "
            "`facemedia research grant` with your public key",
        ) from None
    cipher = ReleaseCipher(release_id, open_grant(release_id, grant, key))
    entries = {f["name"]: f for f in index["files"]}
    downloaded = skipped = total_bytes = 0
    # the documents first (exact bytes), so the shards can be checked against the manifest
    docs = sorted(n for n, f in entries.items() if f.get("kind") != "shard")
    for name in docs:
        path = out / name
        if path.is_file() and not path.is_symlink() and _sha_file(path) == entries[name]["sha256"]:
            skipped += 1
            continue
        total_bytes += _download(store, cipher, entries[name], path, progress)
        downloaded += 1
    manifest = _checked_manifest((out / "manifest.parquet").read_bytes(), index)
    members = _members(manifest)
    removed = _removed(manifest, revoked)
    newly = 0
    for name in sorted(n for n, f in entries.items() if f.get("kind") == "shard"):
        path = out / name
        state = None
        if path.is_file() and not path.is_symlink():
            try:
                state = _shard_ok(path, entries[name], members, removed)
            except ReleaseError:
                state = None
        if state is None:
            total_bytes += _download(store, cipher, entries[name], path, progress)
            downloaded += 1
            state = "full"
        else:
            skipped += 1
        if state == "full" and removed.get(name):
            newly += _drop_revoked(path, removed[name])
    try:
        for fname, data in (
            ("revocations.json", rev_bytes),
            ("revocations.sig", rev_sig),
            ("index.json", index_bytes),
            ("index.sig", index_sig),
            ("signer.pub", signer_used),
        ):
            atomic_write_private(out / fname, data)
    except PrivateFileError as exc:
        raise ReleaseError("bad_request", str(exc)) from None
    legacy = out / "revoked.json"  # unsigned local state of older versions: never trusted
    if legacy.is_file() and not legacy.is_symlink():
        legacy.unlink()
    _remove_partials(out)
    _remember_sequence(cfg, release_id, seq)
    samples = sum(1 for r in manifest if r.get("kind") == "media")
    return PullResult(
        release_id=release_id,
        files=len(entries),
        downloaded=downloaded,
        skipped=skipped,
        bytes=total_bytes,
        samples=samples - sum(len(v) for v in removed.values()),
        revoked_subjects=len(revoked),
        removed_samples=newly,
        revocation_sequence=seq,
    )


def verify(out: Path, *, signer: bytes | None = None, config: Path | None = None) -> VerifyResult:
    """Re-check a pulled release against a pinned signer (never the directory's own
    ``signer.pub``): signatures, the revocation list's sequence, every document byte for
    byte, and every shard either as indexed (holding no revoked sample) or as the signed
    manifest's members minus exactly the samples the signed list revokes."""
    cfg = config or config_dir()
    keys = _trusted(signer, cfg)
    for name in ("index.json", "index.sig", "revocations.json", "revocations.sig"):
        if not (out / name).is_file():
            raise ReleaseError("missing_file", f"{name} is missing", path=name)
    index_bytes = (out / "index.json").read_bytes()
    _verify_any(keys, index_bytes, (out / "index.sig").read_bytes(), "index.json")
    index = _parse_index(index_bytes, None)
    release_id = str(index["release_id"])
    revoked, seq = _load_revocations(
        keys,
        (out / "revocations.json").read_bytes(),
        (out / "revocations.sig").read_bytes(),
        release_id,
    )
    _check_sequence(cfg, release_id, seq)
    entries = sorted(index["files"], key=lambda f: (f["kind"] == "shard", f["name"]))
    manifest: list[dict[str, Any]] | None = None
    members: dict[str, dict[str, dict[str, Any]]] = {}
    removed: dict[str, set[str]] = {}
    for entry in entries:
        name = entry["name"]
        path = out / name
        if not path.is_file() or path.is_symlink():
            raise ReleaseError("missing_file", f"{name} is missing", path=name)
        if entry["kind"] != "shard":
            if _sha_file(path) != entry["sha256"]:
                raise ReleaseError(
                    "checksum_mismatch", f"{name} does not match the signed index", path=name
                )
            if name == "manifest.parquet":
                manifest = _checked_manifest(path.read_bytes(), index)
                members = _members(manifest)
                removed = _removed(manifest, revoked)
            continue
        if _shard_ok(path, entry, members, removed) == "full" and removed.get(name):
            raise ReleaseError(
                "revoked_present",
                f"{name} still holds samples the signed revocation list revokes: run "
                "`facemedia research pull` again",
                path=name,
            )
    assert manifest is not None  # _parse_index requires manifest.parquet
    _remember_sequence(cfg, release_id, seq)
    gone = sum(len(v) for v in removed.values())
    return VerifyResult(
        release_id=release_id,
        files=len(entries),
        samples=sum(1 for r in manifest if r.get("kind") == "media") - gone,
        removed_samples=gone,
        revocation_sequence=seq,
    )
