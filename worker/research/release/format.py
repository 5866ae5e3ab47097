"""The stored layout of a release and its plain formats, shared by the service side and
:mod:`.pull` (so the researcher's side never imports the service).

Owns: the object keys under ``releases/<release id>/`` (files of each generation, build parts,
sealed build state, grants, the signed index and revocation list), the document format names,
the shard member naming (``<release sample id>.<ext>``), the tar member header every shard is
written with, the filter that copies a shard without some samples' members, and the hashing
reader that counts and hashes ciphertext on its way to or from the store. Imports nothing
heavier than :mod:`worker.storage.base`.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Callable, Collection
from typing import BinaryIO

from worker.storage.base import check_key

__all__ = [
    "INDEX_FORMAT",
    "MEDIA_EXT",
    "REVOCATIONS_FORMAT",
    "HashingReader",
    "copy_tar_without",
    "file_key",
    "grant_key",
    "index_key",
    "index_sig_key",
    "member_sample",
    "part_key",
    "parts_prefix",
    "release_prefix",
    "revocations_key",
    "revocations_sig_key",
    "shard_name",
    "signer_key",
    "state_key",
    "tarinfo",
]

INDEX_FORMAT = "facemedia.release.index"
REVOCATIONS_FORMAT = "facemedia.release.revocations"
MEDIA_EXT = {"image": "jpg", "video": "mp4"}
"""The shard member extension of each sample media kind (anything else: ``bin``)."""


# ----- object keys -----------------------------------------------------------------------------


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


def parts_prefix(release_id: str) -> str:
    """Where the (encrypted) part records of a release being built live."""
    return f"{release_prefix(release_id)}/parts/"


def part_key(release_id: str, index: int) -> str:
    """The part record of shard ``index`` (what the shard holds; dropped after the finish)."""
    return f"{parts_prefix(release_id)}{index:06d}.json"


def state_key(release_id: str, generation: int) -> str:
    """The sealed build state of ``generation`` (what a purge rebuilds from)."""
    return f"{release_prefix(release_id)}/state/{generation:06d}.json"


def grant_key(release_id: str, fingerprint: str) -> str:
    """The grant of the researcher key with ``fingerprint``."""
    return f"{release_prefix(release_id)}/grants/{fingerprint}.json"


def index_key(release_id: str) -> str:
    """The signed file index."""
    return f"{release_prefix(release_id)}/index.json"


def index_sig_key(release_id: str) -> str:
    """The index's signature."""
    return f"{release_prefix(release_id)}/index.sig"


def signer_key(release_id: str) -> str:
    """A copy of the signer's public key (for people; never trusted by ``pull``)."""
    return f"{release_prefix(release_id)}/signer.pub"


def revocations_key(release_id: str) -> str:
    """The signed revocation list."""
    return f"{release_prefix(release_id)}/revocations.json"


def revocations_sig_key(release_id: str) -> str:
    """The revocation list's signature."""
    return f"{release_prefix(release_id)}/revocations.sig"


def shard_name(index: int) -> str:
    """The plaintext file name of shard ``index``."""
    return f"shard-{index:06d}.tar"


# ----- shard members ---------------------------------------------------------------------------


def member_sample(member: str) -> str:
    """The release sample id a shard member belongs to (``<sample>.jpg``, ``<sample>.json``)."""
    return member.split(".", 1)[0]


def tarinfo(name: str, size: int) -> tarfile.TarInfo:
    """The header of every shard member: no time, owner or mode that could identify anyone."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def copy_tar_without(src: tarfile.TarFile, samples: Collection[str]) -> tuple[bytes, set[str]]:
    """A USTAR copy of ``src`` without the members of ``samples``; (bytes, the samples whose
    members were left out). Every other member keeps its bytes."""
    out = io.BytesIO()
    dropped: set[str] = set()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as dst:
        for info in src:
            sample = member_sample(info.name)
            if sample in samples:
                dropped.add(sample)
                continue
            fh = src.extractfile(info)
            data = fh.read() if fh is not None else b""
            dst.addfile(tarinfo(info.name, len(data)), io.BytesIO(data))
    return out.getvalue(), dropped


# ----- streams ---------------------------------------------------------------------------------


class HashingReader:
    """Counts and hashes what is read through it (ciphertext on its way to or from the store);
    ``report(n)`` is told each chunk's size."""

    def __init__(self, src: BinaryIO, report: Callable[[int], None] | None = None) -> None:
        self._src = src
        self._report = report
        self.sha = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        """Read up to ``n`` bytes from the source, counting and hashing them."""
        data = self._src.read(n)
        self.sha.update(data)
        self.size += len(data)
        if self._report is not None:
            self._report(len(data))
        return data
