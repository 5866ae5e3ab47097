"""The key layout (worker/objects/layout.py): every key shape, byte for byte as stored data was
written under; one definition; no personal data in any key a real job writes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from worker.objects import layout
from worker.storage.base import CHECKPOINT_PREFIX, RESERVED_PREFIXES, check_key, listed
from worker.storage.errors import InvalidKey

JOB = "0123456789abcdef0123456789abcdef"
REL = "fedcba9876543210fedcba9876543210"
FP = "ab" * 32

# The strings stored objects were written (and their encryption contexts bound) under: a change
# here makes stored data unreadable.
GOLDEN = [
    (layout.original_key(JOB), f"originals/{JOB}"),
    (layout.output_key(JOB, "faces.json"), f"outputs/{JOB}/faces.json"),
    (layout.outputs_prefix(JOB), f"outputs/{JOB}/"),
    (layout.research_key(JOB), f"research/{JOB}"),
    (layout.staging_key(JOB), f"staging/{JOB}"),
    (layout.release_prefix(REL), f"releases/{REL}"),
    (layout.file_key(REL, "shard-000000.tar", 0), f"releases/{REL}/files/shard-000000.tar"),
    (layout.file_key(REL, "manifest.parquet", 3), f"releases/{REL}/files/g3/manifest.parquet"),
    (layout.parts_prefix(REL), f"releases/{REL}/parts/"),
    (layout.part_key(REL, 7), f"releases/{REL}/parts/000007.json"),
    (layout.state_key(REL, 2), f"releases/{REL}/state/000002.json"),
    (layout.grant_key(REL, FP), f"releases/{REL}/grants/{FP}.json"),
    (layout.index_key(REL), f"releases/{REL}/index.json"),
    (layout.index_sig_key(REL), f"releases/{REL}/index.sig"),
    (layout.signer_key(REL), f"releases/{REL}/signer.pub"),
    (layout.revocations_key(REL), f"releases/{REL}/revocations.json"),
    (layout.revocations_sig_key(REL), f"releases/{REL}/revocations.sig"),
    (layout.checkpoint_key(12), "checkpoints/audit-000000000012.json"),
]


@pytest.mark.parametrize(("key", "expected"), GOLDEN, ids=[g[1] for g in GOLDEN])
def test_every_key_is_byte_identical_and_well_formed(key: str, expected: str) -> None:
    assert key == expected
    check_key(key.rstrip("/"))


def test_a_path_trick_is_refused() -> None:
    for bad in ("../etc", "a/../b", "UPPER", "a b", ""):
        with pytest.raises(InvalidKey):
            layout.original_key(bad)
        with pytest.raises(InvalidKey):
            layout.release_prefix(bad)


def test_checkpoints_are_under_the_stores_reserved_prefix() -> None:
    assert layout.CHECKPOINTS.prefix == CHECKPOINT_PREFIX in RESERVED_PREFIXES
    for seq in (1, 12, 999_999_999_999):
        key = layout.CHECKPOINTS.key(seq)
        assert layout.CHECKPOINTS.seq(key) == seq
        assert not listed(key, "")  # never in a bulk listing (the orphan sweep)
    for other in (layout.original_key(JOB), "checkpoints/audit-12.json", "checkpoints/x.json"):
        assert layout.CHECKPOINTS.seq(other) is None
    # names sort by head
    assert sorted([layout.checkpoint_key(10), layout.checkpoint_key(9)])[0].endswith("9.json")


def test_the_layout_is_the_one_definition_of_a_key_prefix() -> None:
    """No other module of the worker spells a key prefix (the store's reserved checkpoint
    prefix excepted: its listing rule needs it)."""
    root = Path(__file__).resolve().parents[2] / "worker"
    prefixes = "|".join(
        p.rstrip("/") for p in (layout.ORIGINALS, layout.OUTPUTS, layout.RESEARCH, layout.STAGING)
    )
    spelled = re.compile(
        r"""f?["'](?:""" + prefixes + "|" + layout.RELEASES.rstrip("/") + r"""|checkpoints)/"""
    )
    allowed = {root / "objects" / "layout.py", root / "storage" / "base.py"}
    found = [
        f"{path.relative_to(root.parent)}:{n}: {line.strip()}"
        for path in sorted(root.rglob("*.py"))
        if path not in allowed
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if spelled.search(line)
    ]
    assert not found, "key prefixes spelled outside worker/objects/layout.py:\n" + "\n".join(found)


def _mirrored(jpeg: bytes) -> bytes:
    """The astronaut mirrored: the default research profile passes the residual gate on it
    (tests/research/test_sampling.py), so the job keeps a research sample."""
    import cv2
    import numpy as np

    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img[:, ::-1]))
    assert ok
    return bytes(buf)


SHAPES = re.compile(
    r"^(originals/[0-9a-f]{32}|outputs/[0-9a-f]{32}/[a-z0-9_.-]+|research/[0-9a-f]{32}"
    r"|staging/[0-9a-f]{32}|checkpoints/audit-\d{12}\.json)$"
)


def test_no_personal_data_in_any_key_a_job_writes(
    make_settings: Any, astronaut_jpeg: bytes
) -> None:
    """A real job with research consent and a sample rate of 1: every key in the store has one
    of the layout's shapes, and none holds the upstream id, the subject's row id, key id or
    hash, or anything the upstream sent (attribute values)."""
    from worker.bootstrap import Container, set_container
    from worker.ledger.models import Subject
    from worker.ledger.subjects import Consent

    upstream = "alice.example-7731"
    c = Container(make_settings(research={"sample_rate": 1.0}))
    set_container(c)
    try:
        job_id = c.client.submit(
            _mirrored(astronaut_jpeg),
            "detect",
            subject_id=upstream,
            consent=Consent(research=True),
            attributes={"age": "34", "region": "Zhejiang", "device": "iPhone14,2"},
        )
        c.checkpoint()
        assert c.service.status(job_id)["status"] == "succeeded"
        ref = c.subjects.find(upstream)
        assert ref is not None
        with c.db.session() as s:
            subject = s.get(Subject, ref.id)
            assert subject is not None
            secrets = {upstream, ref.id, ref.key_id, subject.subject_hash, "Zhejiang", "iPhone"}
        keys = list(c.store.keys()) + list(c.store.keys(CHECKPOINT_PREFIX))
        assert any(k.startswith(layout.RESEARCH) for k in keys)  # the sample was kept
        assert any(k.startswith(CHECKPOINT_PREFIX) for k in keys)
        for key in keys:
            assert SHAPES.match(key), key
            for secret in secrets:
                assert secret.lower() not in key.lower(), (key, "holds personal data")
    finally:
        c.close()
        set_container(None)
