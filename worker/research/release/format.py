"""The plain formats of a release, shared by the service side and
:mod:`.pull` (so the researcher's side never imports the service).

Owns: the document format names, the shard file and member naming (``<release sample
id>.<ext>``), the tar member header every shard is written with, the filter that copies a shard
without some samples' members, and the hashing reader that counts and hashes ciphertext on its
way to or from the store. The object keys under ``releases/<release id>/`` are
:mod:`worker.objects.layout`'s. Imports nothing of the worker.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Callable, Collection
from typing import BinaryIO

__all__ = [
    "INDEX_FORMAT",
    "MEDIA_EXT",
    "REVOCATIONS_FORMAT",
    "HashingReader",
    "copy_tar_without",
    "member_sample",
    "shard_name",
    "tarinfo",
]

INDEX_FORMAT = "facemedia.release.index"
REVOCATIONS_FORMAT = "facemedia.release.revocations"
MEDIA_EXT = {"image": "jpg", "video": "mp4"}
"""The shard member extension of each sample media kind (anything else: ``bin``)."""


# ----- file names ------------------------------------------------------------------------------


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
