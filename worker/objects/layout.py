"""Where every stored object lives: the one file for the key layout.

Keys are opaque: job, sample, staging and release ids are random ledger ids, output and release
file names are the service's own; no subject id, upstream id, attribute, file name of a user or
device field ever appears in a key (``tests/objects/test_layout.py``). Every key has the shape
the store port accepts (:func:`worker.storage.base.check_key`). The strings are byte-identical
to the ones stored data was written under: changing one makes stored objects unreadable (their
encryption context binds the key).

::

    originals/<job id>                                   class original
    outputs/<job id>/<output name>                       class output
    research/<sample id>                                 class research
    staging/<staged id>                                  class staging
    releases/<release id>/files/<name>                   class release (generation 0)
    releases/<release id>/files/g<n>/<name>              ... rebuilt by revocation n
    releases/<release id>/parts/<shard, 6 digits>.json   ... build parts (until published)
    releases/<release id>/state/<generation>.json        ... sealed build state
    releases/<release id>/grants/<fingerprint>.json      ... a researcher's grant
    releases/<release id>/index.json, index.sig, signer.pub, revocations.json, revocations.sig
    checkpoints/audit-<seq, 12 digits>.json              audit checkpoints (never deleted)

Imports nothing heavier than :mod:`worker.storage.base` (the researcher's ``pull`` uses it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from worker.storage.base import CHECKPOINT_PREFIX, check_key

__all__ = [
    "CHECKPOINTS",
    "ORIGINALS",
    "OUTPUTS",
    "RELEASES",
    "RESEARCH",
    "STAGING",
    "CheckpointLayout",
    "checkpoint_key",
    "file_key",
    "grant_key",
    "index_key",
    "index_sig_key",
    "original_key",
    "output_key",
    "outputs_prefix",
    "part_key",
    "parts_prefix",
    "release_prefix",
    "research_key",
    "revocations_key",
    "revocations_sig_key",
    "signer_key",
    "staging_key",
    "state_key",
]

ORIGINALS = "originals/"
OUTPUTS = "outputs/"
RESEARCH = "research/"
STAGING = "staging/"
RELEASES = "releases/"


# ----- jobs -------------------------------------------------------------------------------------


def original_key(job_id: str) -> str:
    """Where a job's original lives."""
    return check_key(f"{ORIGINALS}{job_id}")


def outputs_prefix(job_id: str) -> str:
    """The prefix of every output of a job."""
    return f"{OUTPUTS}{job_id}/"


def output_key(job_id: str, name: str) -> str:
    """Where a job's output ``name`` lives (deterministic, so a re-run overwrites)."""
    return check_key(f"{outputs_prefix(job_id)}{name}")


# ----- research ---------------------------------------------------------------------------------


def research_key(sample_id: str) -> str:
    """Where a research sample lives."""
    return check_key(f"{RESEARCH}{sample_id}")


def staging_key(staged_id: str) -> str:
    """Where a staged k-Same item lives."""
    return check_key(f"{STAGING}{staged_id}")


# ----- releases ---------------------------------------------------------------------------------


def release_prefix(release_id: str) -> str:
    """``releases/<release id>``."""
    return check_key(f"{RELEASES}{release_id}")


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


# ----- audit checkpoints ------------------------------------------------------------------------

_CHECKPOINT = re.compile(r"^" + re.escape(CHECKPOINT_PREFIX) + r"audit-(\d{12})\.json$")


@dataclass(frozen=True)
class CheckpointLayout:
    """Where audit checkpoints live: handed to :class:`worker.ledger.checkpoints.Checkpointer`
    (the ledger never imports this layer). The prefix is the store port's reserved one
    (:data:`worker.storage.base.CHECKPOINT_PREFIX`: its listings leave it out)."""

    prefix: str = CHECKPOINT_PREFIX

    def key(self, seq: int) -> str:
        """The key of the checkpoint of head ``seq`` (zero-padded: names sort by seq)."""
        return f"{self.prefix}audit-{seq:012d}.json"

    def seq(self, key: str) -> int | None:
        """The head ``seq`` a checkpoint key names, or None for any other key."""
        m = _CHECKPOINT.match(key)
        return int(m.group(1)) if m else None


CHECKPOINTS = CheckpointLayout()


def checkpoint_key(seq: int) -> str:
    """The object key of the checkpoint of head ``seq``."""
    return CHECKPOINTS.key(seq)
