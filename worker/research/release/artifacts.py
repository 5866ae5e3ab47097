"""The release's documents: Parquet manifest, datasheet (Datasheets for Datasets) and privacy
report. Pure functions of the build's records: no store, no ledger.

* ``manifest.parquet``: one row per sample, every field filled (:data:`MANIFEST_SCHEMA`); it
  loads as is in pandas and pyarrow. :func:`read_manifest` turns it (and the per-member layout
  of releases built before) into the per-member rows that ``pull`` and ``verify`` check.
* ``datasheet.md``: prose for people, answering the Datasheets for Datasets questions.
* ``privacy_report.html``: one self-contained page (inline CSS, inline SVG charts, thumbnails
  as data URIs, a Content-Security-Policy that forbids loading anything).
"""

from __future__ import annotations

import html
import io
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from .kanon import QUASI

__all__ = ["MANIFEST_SCHEMA", "datasheet", "manifest_parquet", "privacy_report", "read_manifest"]

# (column, type, meaning): the manifest's columns, in order. Sizes are bytes; checksums SHA-256
# (hex) of the plaintext files as they are inside the tar, and of the shard.
MANIFEST_SCHEMA: tuple[tuple[str, str, str], ...] = (
    ("sample", "string", "the sample's id in this release (a pseudonym)"),
    ("subject", "string", "the subject's pseudonym in this release"),
    ("shard", "string", "the shard file holding the sample"),
    ("media_kind", "string", "image or video"),
    ("operator", "string", "the de-identification operator"),
    ("media_member", "string", "the media file's name inside the shard"),
    ("media_size", "int64", "its size"),
    ("media_sha256", "string", "its SHA-256"),
    ("json_member", "string", "the sample record's name inside the shard"),
    ("json_size", "int64", "its size"),
    ("json_sha256", "string", "its SHA-256"),
    *((a, "string", "generalized quasi-identifier ('*': suppressed)") for a in QUASI),
    ("shard_sha256", "string", "SHA-256 of the shard (tar) as indexed"),
    ("shard_stored_sha256", "string", "SHA-256 of the encrypted shard object"),
)


def manifest_parquet(
    members: Sequence[Mapping[str, Any]], shards: Sequence[Mapping[str, Any]]
) -> bytes:
    """One row per sample, from the build's per-member records (a media file and its JSON
    record per sample) and the shards' figures."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    by_shard = {str(sh["name"]): sh for sh in shards}
    samples: dict[str, dict[str, Any]] = {}
    for m in members:
        row = samples.setdefault(str(m["sample"]), {})
        prefix = "media" if m["kind"] == "media" else "json"
        row[f"{prefix}_member"] = m["member"]
        row[f"{prefix}_size"] = int(m["size"])
        row[f"{prefix}_sha256"] = m["sha256"]
        if m["kind"] == "media":
            shard = by_shard[str(m["shard"])]
            row |= {
                "sample": m["sample"],
                "subject": m["subject"],
                "shard": m["shard"],
                "media_kind": m["media_kind"],
                "operator": m["operator"],
                **{a: m[a] for a in QUASI},
                "shard_sha256": shard["sha256"],
                "shard_stored_sha256": shard["stored_sha256"],
            }
    rows = [samples[k] for k in sorted(samples)]
    schema = pa.schema(
        [(c, pa.int64() if t == "int64" else pa.string(), False) for c, t, _ in MANIFEST_SCHEMA]
    )
    table = pa.Table.from_pylist(rows, schema=schema)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def read_manifest(data: bytes) -> list[dict[str, Any]]:
    """The manifest as per-member rows (``shard``, ``member``, ``kind`` media or json,
    ``sample``, ``subject``, ``media_kind``, ``operator``, ``size``, ``sha256`` and the
    quasi-identifiers): what ``pull`` and ``verify`` check shards against. Reads the
    per-sample layout and the per-member one of releases built before it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    # In this thread, from an Arrow buffer, without pre-buffering: no Arrow thread-pool thread
    # is started, so none can still be running when the interpreter exits (a joinable native
    # thread destroyed at exit aborts the process: "terminate called without an active
    # exception", exit 134, seen once after a complete `research pull`).
    reader = pq.ParquetFile(pa.BufferReader(data), pre_buffer=False)
    rows: list[dict[str, Any]] = reader.read(use_threads=False).to_pylist()
    if rows and "kind" in rows[0]:  # the older per-member layout: already member rows
        return rows
    out: list[dict[str, Any]] = []
    for r in rows:
        common = {
            "shard": r["shard"],
            "sample": r["sample"],
            "subject": r["subject"],
            "media_kind": r["media_kind"],
            "operator": r["operator"],
            **{a: r[a] for a in QUASI},
        }
        for kind in ("media", "json"):
            out.append(
                common
                | {
                    "member": r[f"{kind}_member"],
                    "kind": kind,
                    "size": r[f"{kind}_size"],
                    "sha256": r[f"{kind}_sha256"],
                }
            )
    return out


# ----- words -------------------------------------------------------------------------------------

_IRREGULAR = {"person": "people", "class": "classes"}


def _n(count: int, word: str) -> str:
    """``1 shard``, ``3 shards``, ``2 people``."""
    if count == 1:
        return f"1 {word}"
    head, _, last = word.rpartition(" ")
    plural = _IRREGULAR.get(last) or (
        last + "es" if last.endswith(("s", "x", "ch")) else last + "s"
    )
    return f"{count:,} {head + ' ' if head else ''}{plural}"


def _were(count: int) -> str:
    """``was`` for one, ``were`` otherwise."""
    return "was" if count == 1 else "were"


def _join(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


# What each generalization level of each quasi-identifier keeps (see :mod:`.kanon`).
_LEVELS: dict[str, tuple[str, tuple[str, ...]]] = {
    "age_band": ("age", ("10-year bands", "20-year bands", "removed")),
    "region": ("region", ("province", "macro-region (such as East China)", "removed")),
    "device_family": (
        "device",
        ("device family (such as iOS or Android)", "mobile or desktop", "removed"),
    ),
    "capture_month": ("capture date", ("month", "quarter", "year", "removed")),
}


def _levels_prose(levels: Mapping[str, Any]) -> str:
    parts = []
    for attr in QUASI:
        label, words = _LEVELS[attr]
        level = min(max(int(levels.get(attr, 0)), 0), len(words) - 1)
        parts.append(f"{label}: {words[level]}")
    return _join(parts)


def _kinds_prose(kinds: Mapping[str, int]) -> str:
    return _join([_n(n, str(k)) for k, n in sorted(kinds.items())])


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


_SAMPLING_PROSE = (
    ("not_selected", "{were} not drawn by the sampling rate"),
    ("no_consent", "had no research consent"),
    ("minor_without_guardian", "came from minors without a guardian's consent"),
    ("withdrawn", "came from people who had withdrawn consent"),
    ("erased", "came from people erased or being erased"),
)
_EXCLUDED_PROSE = (
    ("withdrawn", "the person withdrew consent"),
    ("erased", "the person was erased"),
    ("no_consent", "the person's research consent was gone"),
    ("minor_without_guardian", "a minor lacked a guardian's consent"),
    ("deleted", "the sample had expired and was deleted"),
    ("gate", "the sample had failed the residual-face gate"),
    ("after_plan", "the person withdrew or was erased while the release was built"),
)


def _funnel_prose(funnel: Mapping[str, Any]) -> list[str]:
    """The loss funnel as sentences (nothing when the build recorded none)."""
    if not funnel:
        return []
    sampling = funnel.get("sampling", {})
    lines = []
    candidates = int(sampling.get("candidates", 0))
    if candidates:
        lost = [
            f"{_n(int(sampling[k]), 'job')} {w.format(were=_were(int(sampling[k])))}"
            for k, w in _SAMPLING_PROSE
            if sampling.get(k)
        ]
        kept = int(sampling.get("sampled", 0))
        gate = sampling.get("gate_discarded", {})
        if gate:
            lost.append(
                f"{_n(sum(int(v) for v in gate.values()), 'de-identified derivative')} failed the "
                "residual-face gate ("
                + ", ".join(f"{reason}: {n}" for reason, n in sorted(gate.items()))
                + ")"
            )
        other = sum(int(v) for v in sampling.get("other", {}).values())
        if other:
            lost.append(f"{_n(other, 'job')} could not be sampled (unsupported media or errors)")
        lines.append(
            f"The service decided on research sampling for {_n(candidates, 'finished job')}"
            + (": " + _join(lost) if lost else "")
            + f"; {_n(kept, 'sample')} {_were(kept)} kept."
        )
    excluded = funnel.get("excluded", {})
    dropped = [
        f"{_n(int(excluded[k]), 'sample')} because {w}"
        for k, w in _EXCLUDED_PROSE
        if excluded.get(k)
    ]
    stored = int(funnel.get("stored_samples", 0))
    sentence = (
        f"When this release was built, {_n(stored, 'stored sample')} {_were(stored)} considered"
    )
    sentence += "; it left out " + _join(dropped) if dropped else ", and none was left out"
    suppressed = int(funnel.get("suppressed_k_anonymity", 0))
    sentence += (
        f". Reaching k-anonymity suppressed {_n(suppressed, 'sample')}"
        if suppressed
        else ". Reaching k-anonymity suppressed none"
    )
    revoked = int(funnel.get("revoked_after_publication", 0))
    if revoked:
        sentence += (
            f"; {_n(revoked, 'sample')} of revoked subjects {_were(revoked)} removed after "
            "publication"
        )
    released = int(funnel.get("released", 0))
    sentence += (
        f"; {_n(released, 'sample')} {'remains' if released == 1 else 'remain'} in the release."
    )
    lines.append(sentence)
    return lines


def datasheet(summary: Mapping[str, Any], samples: Sequence[Mapping[str, Any]]) -> str:
    """``datasheet.md``: the Datasheets for Datasets questions, answered in prose from the
    build's figures."""
    s = summary
    classes = Counter(tuple(x["quasi"][a] for a in QUASI) for x in samples)
    kinds = Counter(x["media_kind"] for x in samples)
    ops = Counter(x["operator"] for x in samples)
    gate = s.get("gate", {})
    elig = s.get("eligibility", {})
    n_samples, n_subjects = int(s["samples"]), int(s["subjects"])
    minors = _n(int(s.get("minor_samples", 0)), "sample")
    left_out = int(elig.get("excluded_minor", 0))
    revoked = int(s.get("revoked_samples_removed", 0))
    lines = [
        f"# Datasheet: {s['name']}",
        "",
        f"Release `{s['name']}` (id `{s['release_id']}`), built {s['created_at']}: "
        f"{_n(n_samples, 'de-identified sample')} in {_n(int(s['shards']), 'shard')}.",
        "",
        "## Motivation",
        "",
        "This dataset lets researchers study face-media processing (detection, "
        "de-identification, avatar and AR effects) under real-world capture conditions "
        "without access to anyone's face. The facemedia service operator created it from "
        "samples that users agreed to share for research.",
        "",
        "## Composition",
        "",
        f"The release holds {_n(n_samples, 'sample')} ({_kinds_prose(kinds) or 'none'}) of "
        f"{_n(n_subjects, 'person')}. People are known only by pseudonyms that are specific to "
        "this release. Each sample is a de-identified image (`.jpg`) or video (`.mp4`) with a "
        "JSON record: the sample's release id, the subject's pseudonym, the de-identification "
        "operator, the gate's result and the generalized quasi-identifiers. There are no "
        "other labels. No names, upstream ids, device ids, IP addresses, exact dates or ages "
        "are included.",
        "",
        "De-identification operators used: "
        + _join([f"{o} ({_n(n, 'sample')})" for o, n in sorted(ops.items())])
        + ".",
        "",
        f"The quasi-identifiers are generalized as follows: {_levels_prose(s['levels'])}. "
        f"The samples fall into {_n(len(classes), 'equivalence class')} of these values:",
        "",
        _table(
            [*QUASI, "samples"],
            [[*key, n] for key, n in sorted(classes.items())],
        ),
        "",
        "## Collection process",
        "",
        "Samples were taken from media that users submitted to the service for processing, at "
        "a configured sampling rate (`research.sample_rate`), and only when the user had given "
        "research consent at submission. The original was deleted when its job ended; only "
        "the de-identified derivative was kept, encrypted under the person's key.",
        "",
        *[line for p in _funnel_prose(s.get("funnel", {})) for line in (p, "")],
        "## Consent",
        "",
        "Every person in the release had research consent recorded when the release was "
        "built, and had neither withdrawn it nor been erased. Minors are included only with "
        f"a guardian's recorded consent: the release holds {minors} of minors with that "
        f"consent; {_n(left_out, 'sample')} of minors without it {_were(left_out)} left out.",
        "",
        "## Preprocessing and de-identification",
        "",
        "Faces were de-identified when the sample was taken, by the named operator (`mask`, "
        "the default, paints a solid ellipse reaching beyond the face box). The pixels were "
        "re-encoded without metadata: no EXIF, GPS, ICC profile or maker notes; for video, "
        "the container's metadata and the audio are dropped. Every sample passed the "
        "residual-face gate, which searches the whole image (or every frame) again at a low "
        "threshold and discards the sample if it finds any face.",
        "",
        f"The samples in this release passed the gate ({_n(int(gate.get('passed', 0)), 'sample')}, "
        f"{_n(int(gate.get('frames_checked', 0)), 'frame')} checked, "
        f"{_n(int(gate.get('residual_faces', 0)), 'residual face')} found).",
        "",
        f"k-anonymity over {_join(list(QUASI))}: k = {s['k_requested']} was requested; the "
        f"smallest equivalence class holds {_n(int(s['k_achieved']), 'sample')}; "
        f"{_n(int(s['suppressed']), 'sample')} {_were(int(s['suppressed']))} suppressed to get "
        "there.",
        "",
        "## Uses",
        "",
        "Research on face-media processing. Do not try to re-identify anyone, to link samples "
        "to other data, or to infer sensitive attributes of individuals. The data is "
        "de-identified, not anonymised (PIPL art. 73): treat it as personal information.",
        "",
        "## Distribution and access",
        "",
        "The shards, the manifest and these documents are encrypted under a key of this "
        "release only. Access is by grant: the key is wrapped to each researcher's X25519 "
        "public key. The file index is signed with the service's Ed25519 key (`signer.pub`); "
        "`facemedia research pull` checks the signature and every checksum.",
        "",
        "## Retention, maintenance and revocation",
        "",
        "The release is kept until it is revoked. People may withdraw research consent at "
        "any time. Their pseudonyms are then listed in the signed `revocations.json` (whose "
        "sequence number only grows); the service rebuilds the stored release without their "
        "samples (shards, manifest, this datasheet and the privacy report; the old objects "
        "are deleted with every version); and every holder must delete those samples "
        "(`facemedia research pull` does so at the next pull). The pseudonyms are specific to "
        "this release, so no two releases can be joined on them.",
        "",
        f"Since publication, {_n(revoked, 'sample')} of revoked subjects {_were(revoked)} "
        f"removed (this is generation {s.get('generation', 0)} of the release); "
        "the figures above describe the samples that remain.",
        "",
        "## Contact",
        "",
        "The data protection contact of the facemedia service operator (see the service's "
        "privacy statement).",
        "",
    ]
    return "\n".join(lines)


# ----- the privacy report ------------------------------------------------------------------------

_CSS = """
:root{--ink:#1d2330;--muted:#5b6475;--line:#d9dee7;--bg:#f5f7fa;--accent:#2f6fde;
--warn:#d9822b;--bad:#c2413b;--ok:#2e9b5f}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",sans-serif}
main{max-width:1040px;margin:0 auto;padding:32px 24px 48px}
h1{font-size:26px;margin:0 0 4px}
h2{font-size:18px;margin:0 0 12px}
.sub{color:var(--muted);margin:0 0 24px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px;
margin-bottom:24px}
.card{background:#fff;border:1px solid var(--line);border-radius:8px;padding:12px 16px}
.card b{display:block;font-size:24px}
.card span{color:var(--muted);font-size:13px}
section{background:#fff;border:1px solid var(--line);border-radius:8px;padding:20px;
margin-bottom:20px}
section p{margin:0 0 12px;color:var(--muted)}
svg text{font:13px system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;fill:var(--ink)}
.sheet{display:grid;grid-template-columns:repeat(auto-fill,minmax(168px,1fr));gap:12px}
.sheet figure{margin:0}
.sheet img{width:100%;height:auto;border-radius:6px;border:1px solid var(--line);display:block}
.sheet figcaption{font:11px ui-monospace,monospace;color:var(--muted);overflow:hidden;
text-overflow:ellipsis;white-space:nowrap}
"""


def _bar_chart(title: str, bars: Sequence[tuple[str, int, str]]) -> str:
    """A horizontal bar chart as inline SVG: (label, value, colour) per bar."""
    if not bars:
        return "<p>Nothing to show.</p>"
    width, label_w, row_h = 720, 260, 28
    top = max([v for _, v, _ in bars] + [1])
    plot = width - label_w - 70
    height = row_h * len(bars) + 8
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="100%" '
        f'viewBox="0 0 {width} {height}" aria-label="{html.escape(title)}">'
        f"<title>{html.escape(title)}</title>"
    ]
    for i, (label, value, colour) in enumerate(bars):
        y = 4 + i * row_h
        w = 0 if value <= 0 else max(2, round(plot * value / top))
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 18}" text-anchor="end">{html.escape(label)}</text>'
            f'<rect x="{label_w}" y="{y + 4}" width="{w}" height="{row_h - 10}" rx="3" '
            f'fill="{colour}"/>'
            f'<text x="{label_w + w + 6}" y="{y + 18}">{value:,}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def privacy_report(summary: Mapping[str, Any], thumbnails: Sequence[str]) -> str:
    """``privacy_report.html``: a self-contained page for a reviewer: the summary figures,
    charts (k-anonymity class sizes, where the candidates went, the gate's outcomes by reason)
    drawn as inline SVG, and a contact sheet of de-identified samples (inline JPEGs)."""
    s = summary
    name = html.escape(str(s["name"]))
    funnel = s.get("funnel") or {}
    sampling = funnel.get("sampling", {})
    excluded = funnel.get("excluded", {})
    cards = [
        (f"{int(s['samples']):,}", "samples released"),
        (f"{int(s['subjects']):,}", "people (pseudonymous)"),
        (f"{s['k_achieved']} / {s['k_requested']}", "k achieved / requested"),
        (f"{int(s['suppressed']):,}", "suppressed for k-anonymity"),
        (f"{int(s['shards']):,}", "shards"),
        (str(s.get("generation", 0)), "generation"),
    ]
    hist = sorted(((int(size), int(n)) for size, n in s.get("histogram", {}).items()))
    k_bars = [
        (
            f"classes of {_n(size, 'sample')}",
            n,
            "#2f6fde" if size >= int(s["k_requested"]) else "#c2413b",
        )
        for size, n in hist
    ]
    loss: list[tuple[str, int, str]] = []
    if sampling.get("candidates"):  # none recorded: samples taken before the funnel was counted
        loss.append(("finished jobs (candidates)", int(sampling.get("candidates", 0)), "#8a94a6"))
        for key, _words in _SAMPLING_PROSE:
            loss.append((key.replace("_", " "), int(sampling.get(key, 0)), "#d9822b"))
        gate_lost = sum(int(v) for v in sampling.get("gate_discarded", {}).values())
        loss.append(("residual-face gate", gate_lost, "#c2413b"))
        loss.append(("samples kept", int(sampling.get("sampled", 0)), "#2e9b5f"))
    if funnel:
        loss.append(("stored samples considered", int(funnel.get("stored_samples", 0)), "#8a94a6"))
        for key, _words in _EXCLUDED_PROSE:
            if excluded.get(key):
                loss.append((f"excluded: {key.replace('_', ' ')}", int(excluded[key]), "#d9822b"))
    loss.append(("suppressed (k-anonymity)", int(s["suppressed"]), "#c2413b"))
    loss.append(("released", int(s["samples"]), "#2e9b5f"))
    gate = s.get("gate", {})
    gate_bars = [("passed (released)", int(gate.get("passed", 0)), "#2e9b5f")]
    gate_bars += [
        (f"discarded: {reason.replace('_', ' ')}", int(n), "#c2413b")
        for reason, n in sorted(sampling.get("gate_discarded", {}).items())
    ]
    thumbs = "".join(
        f'<figure><img src="data:image/jpeg;base64,{t}" alt="de-identified sample {i + 1}">'
        f"<figcaption>sample {i + 1}</figcaption></figure>"
        for i, t in enumerate(thumbnails)
    )
    card_html = "".join(
        f"<div class='card'><b>{v}</b><span>{label}</span></div>" for v, label in cards
    )
    funnel_text = "".join(f"<p>{html.escape(p)}</p>" for p in _funnel_prose(funnel))
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
        "img-src data:; style-src 'unsafe-inline'\">"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>Privacy report: {name}</title><style>{_CSS}</style></head><body><main>"
        f"<h1>Privacy report: {name}</h1>"
        f"<p class='sub'>Release id <code>{html.escape(str(s['release_id']))}</code>, built "
        f"{html.escape(str(s['created_at']))}. Quasi-identifiers generalized to "
        f"{html.escape(_levels_prose(s.get('levels', {})))}.</p>"
        f"<div class='cards'>{card_html}</div>"
        "<section><h2>k-anonymity: equivalence-class sizes</h2>"
        f"<p>Every class of identical quasi-identifiers holds at least k = {s['k_requested']} "
        "samples (a class below k would be drawn in red).</p>"
        f"{_bar_chart('Equivalence classes by size', k_bars)}</section>"
        "<section><h2>Where the candidates went</h2>"
        f"{funnel_text}{_bar_chart('Loss funnel', loss)}</section>"
        "<section><h2>Residual-face gate</h2>"
        f"<p>{_n(int(gate.get('frames_checked', 0)), 'frame')} of released samples checked, "
        f"{_n(int(gate.get('residual_faces', 0)), 'residual face')} found; derivatives that "
        "failed the gate when they were taken are counted by reason.</p>"
        f"{_bar_chart('Gate outcomes by reason', gate_bars)}</section>"
        f"<section><h2>Contact sheet</h2><p>{_n(len(thumbnails), 'de-identified sample')} "
        "as released (images only).</p>"
        f"<div class='sheet'>{thumbs}</div></section>"
        "</main></body></html>\n"
    )
