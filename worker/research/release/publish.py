"""Writing one generation of a published release, shared by the finish (generation 0) and
the purge of revoked samples (each later generation): the documents (manifest, datasheet,
privacy report) and the sealed build state under generation-specific keys, then the signer's
public key, the index naming every file with its generation, and the index's signature."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from worker.ledger.models import Release
from worker.objects.layout import file_key, index_key, index_sig_key, signer_key, state_key

from . import artifacts
from .context import ReleaseContext, ReleaseKeys
from .format import INDEX_FORMAT
from .kanon import QUASI
from .keys import canonical_json

__all__ = ["THUMBS_MAX", "Published", "publish"]

THUMBS_MAX = 64


@dataclass(frozen=True)
class Published:
    """What :func:`publish` wrote."""

    public: dict[str, Any]
    manifest_sha256: str
    subjects: list[str]
    state_key: str
    objects: list[str]


def publish(
    ctx: ReleaseContext, row: Release, keys: ReleaseKeys, state: dict[str, Any], generation: int
) -> Published:
    """Write one generation of a release: its documents (manifest, datasheet, privacy
    report) and its sealed build state under generation-specific keys, then the signed
    index naming every file with its generation. The shards of ``state`` are already
    stored."""
    release_id = row.id
    cipher = ctx.cipher(release_id, keys)
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
    funnel = dict(base.get("funnel") or {})
    if funnel:  # what remains of it now (a later generation has removed revoked samples)
        funnel["suppressed_k_anonymity"] = base["suppressed"]
        funnel["revoked_after_publication"] = int(base.get("revoked_removed", 0))
        funnel["released"] = len(media)
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
        "funnel": funnel,
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
        stored_sha, stored_size = ctx.put(key, cipher.seal(key, data))
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
    skey = state_key(release_id, generation)
    ctx.put(skey, cipher.seal(skey, json.dumps(state).encode()))
    manifest_sha = hashlib.sha256(docs["manifest.parquet"]).hexdigest()
    signer = ctx.signing.public_pem()
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
    ctx.put(signer_key(release_id), signer)
    ctx.put(index_key(release_id), body)
    ctx.put(index_sig_key(release_id), ctx.signing.sign(body))
    objects = sorted(
        [file_key(release_id, f["name"], int(f["generation"])) for f in files] + [skey]
    )
    return Published(public, manifest_sha, subjects, skey, objects)
