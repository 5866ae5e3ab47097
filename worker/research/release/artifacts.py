"""The release's documents: Parquet manifest, datasheet (Datasheets for Datasets) and privacy
report. Pure functions of the build's records: no store, no ledger."""

from __future__ import annotations

import html
import io
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from .kanon import QUASI

__all__ = ["datasheet", "manifest_parquet", "privacy_report"]

MANIFEST_COLUMNS = (
    "shard",
    "member",
    "kind",
    "sample",
    "subject",
    "media_kind",
    "operator",
    "size",
    "sha256",
    *QUASI,
)


def manifest_parquet(
    members: Sequence[Mapping[str, Any]], shards: Sequence[Mapping[str, Any]]
) -> bytes:
    """One row per tar member (sample media and its JSON) and one per shard file (kind
    ``shard``: the SHA-256 of the plaintext tar and of the encrypted object)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    for m in members:
        rows.append({c: m.get(c) for c in MANIFEST_COLUMNS} | {"stored_sha256": None})
    for sh in shards:
        rows.append(
            {c: None for c in MANIFEST_COLUMNS}
            | {
                "shard": sh["name"],
                "kind": "shard",
                "size": sh["size"],
                "sha256": sh["sha256"],
                "stored_sha256": sh["stored_sha256"],
            }
        )
    schema = pa.schema(
        [(c, pa.int64() if c == "size" else pa.string()) for c in MANIFEST_COLUMNS]
        + [("stored_sha256", pa.string())]
    )
    table = pa.Table.from_pylist(rows, schema=schema)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def read_manifest(data: bytes) -> list[dict[str, Any]]:
    """The manifest's rows as dicts."""
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = pq.read_table(io.BytesIO(data)).to_pylist()
    return rows


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def datasheet(summary: Mapping[str, Any], samples: Sequence[Mapping[str, Any]]) -> str:
    """``datasheet.md``: the Datasheets for Datasets questions, answered from the build."""
    s = summary
    classes = Counter(tuple(x["quasi"][a] for a in QUASI) for x in samples)
    kinds = Counter(x["media_kind"] for x in samples)
    ops = Counter(x["operator"] for x in samples)
    gate = s.get("gate", {})
    elig = s.get("eligibility", {})
    lines = [
        f"# Datasheet: {s['name']}",
        "",
        f"Release id `{s['release_id']}`, built {s['created_at']}, {s['samples']} samples in "
        f"{s['shards']} shards.",
        "",
        "## Motivation",
        "",
        "Collected to let researchers study face-media processing (detection, de-identification, "
        "avatar and AR effects) on real-world capture conditions without access to anyone's "
        "face. Created by the facemedia service operator from samples users consented to share "
        "for research.",
        "",
        "## Composition",
        "",
        f"* Instances: {s['samples']} de-identified media samples "
        + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        + f"; {s['subjects']} distinct subjects (release pseudonyms).",
        "* Each instance: the de-identified image (`.jpg`) or video (`.mp4`) and a JSON record "
        "(release sample id, subject pseudonym, operator, gate summary, generalized "
        "quasi-identifiers).",
        "* No labels beyond those fields. No names, upstream ids, device ids, IP addresses, "
        "exact dates or ages are included.",
        f"* Operators: {', '.join(f'{o} ({n})' for o, n in sorted(ops.items()))}.",
        f"* Generalization levels applied: {s['levels']}.",
        "",
        "Counts per quasi-identifier equivalence class:",
        "",
        _table(
            [*QUASI, "samples"],
            [[*key, n] for key, n in sorted(classes.items())],
        ),
        "",
        "## Collection process",
        "",
        "Samples were captured from media that users submitted to the service for processing, "
        "at a configured sampling rate, only when the user had given research consent at "
        "submission. The original was deleted when its job ended; only the de-identified "
        "derivative was kept, encrypted under the subject's key.",
        "",
        "## Consent basis",
        "",
        f"* Every included subject had recorded research consent at build time and had neither "
        f"withdrawn it nor been erased ({elig.get('excluded_no_consent', 0)} samples excluded "
        f"for no consent, {elig.get('excluded_withdrawn', 0)} for withdrawal, "
        f"{elig.get('excluded_erased', 0)} for erasure, {elig.get('excluded_deleted', 0)} whose "
        "object was deleted).",
        f"* Minors are included only with a recorded guardian's consent: "
        f"{s.get('minor_samples', 0)} samples of minors with guardian consent included, "
        f"{elig.get('excluded_minor', 0)} samples of minors without it excluded.",
        "",
        "## Preprocessing and de-identification",
        "",
        "Faces were de-identified at capture by the named operator (mask: a solid ellipse "
        "beyond the face box by default); pixels were re-encoded with no metadata (no EXIF, "
        "GPS, ICC or maker notes; video container metadata and audio dropped). Every sample "
        "passed the residual-face gate (re-detection over the whole image or every frame at a "
        "low threshold; any face found discards the sample).",
        "",
        f"Gate results of the included samples: {gate.get('passed', 0)} passed, "
        f"{gate.get('residual_faces', 0)} residual faces, "
        f"{gate.get('frames_checked', 0)} frames checked.",
        "",
        f"k-anonymity over {', '.join(QUASI)}: k requested {s['k_requested']}, "
        f"k achieved {s['k_achieved']} (smallest equivalence class), "
        f"{s['suppressed']} samples suppressed.",
        "",
        "## Uses",
        "",
        "Research on face-media processing. Do not attempt to re-identify anyone, link samples "
        "to other data, or infer sensitive attributes of individuals. The data is de-identified, "
        "not anonymised (PIPL art. 73): treat it as personal information.",
        "",
        "## Distribution and access",
        "",
        "Shards, manifest and documents are encrypted under a key of this release only. Access "
        "is by grant: the key is wrapped to each researcher's X25519 public key. The file index "
        "is signed with the service's Ed25519 key (`signer.pub`); `facemedia research pull` "
        "verifies the signature and every checksum.",
        "",
        "## Retention, maintenance and revocation",
        "",
        "The release is kept until revoked. Subjects may withdraw research consent at any time: "
        "their release pseudonyms are then listed in the signed `revocations.json` (its "
        "sequence number only grows), the service rebuilds the stored release without their "
        "samples (shards, manifest, this datasheet and the privacy report; the old objects are "
        "deleted with every version), and every holder must delete those samples "
        "(`facemedia research pull` does so at the next pull). "
        "Pseudonyms are specific to this release: no two releases can be joined on them.",
        "",
        f"Samples of revoked subjects removed since publication: "
        f"{s.get('revoked_samples_removed', 0)} (release generation {s.get('generation', 0)}); "
        "the counts above are those of the samples that remain.",
        "",
        "## Contact",
        "",
        "The facemedia service operator's data protection contact (see the service's privacy "
        "statement).",
        "",
    ]
    return "\n".join(lines)


def privacy_report(summary: Mapping[str, Any], thumbnails: Sequence[str]) -> str:
    """``privacy_report.html``: contact sheet (inline base64 thumbnails), k histogram, gate."""
    s = summary
    hist = s.get("histogram", {})
    top = max([int(v) for v in hist.values()] or [1])
    bars = "".join(
        f"<tr><td>{html.escape(str(size))}</td><td>{n}</td>"
        f'<td><div style="background:#36c;height:12px;width:{int(300 * int(n) / top)}px">'
        "</div></td></tr>"
        for size, n in sorted(hist.items(), key=lambda kv: int(kv[0]))
    )
    gate = s.get("gate", {})
    gates = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
        for k, v in sorted(gate.items())
    )
    thumbs = "".join(
        f'<img src="data:image/jpeg;base64,{t}" width="96" alt="sample">' for t in thumbnails
    )
    name = html.escape(str(s["name"]))
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Privacy report: {name}</title></head><body>"
        f"<h1>Privacy report: {name}</h1>"
        f"<p>{s['samples']} samples, k requested {s['k_requested']}, k achieved "
        f"{s['k_achieved']}, {s['suppressed']} suppressed.</p>"
        "<h2>Equivalence-class sizes (k histogram)</h2>"
        f"<table><tr><th>class size</th><th>classes</th><th></th></tr>{bars}</table>"
        f"<h2>Residual-face gate</h2><table>{gates}</table>"
        f"<h2>Contact sheet ({len(thumbnails)} de-identified samples)</h2><div>{thumbs}</div>"
        "</body></html>\n"
    )
