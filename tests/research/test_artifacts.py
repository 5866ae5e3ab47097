"""What researchers read: ``manifest.parquet`` (one row per sample, every field filled, loads in
pandas and pyarrow), the datasheet (prose, no "1 shards", no dict repr) and the privacy report
(a self-contained HTML page, rendered in headless Chromium: not blank, no console errors).

The documents are pure functions of a build's records, so the records are made here; the
thumbnails are scikit-image's non-person sample images (coffee, cat, rocket...).
"""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from worker.research.release.artifacts import (
    MANIFEST_SCHEMA,
    datasheet,
    manifest_parquet,
    privacy_report,
    read_manifest,
)
from worker.research.release.kanon import QUASI

QUASI_VALUES = [
    {
        "age_band": "20-39",
        "region": "East China",
        "device_family": "mobile",
        "capture_month": "2026-Q4",
    },
    {
        "age_band": "40-59",
        "region": "North China",
        "device_family": "mobile",
        "capture_month": "2026-Q4",
    },
]


def _records(n: int = 7, shards: int = 2) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per-member build records (media + JSON per sample) and the shards' figures."""
    members: list[dict[str, Any]] = []
    for i in range(n):
        rid = f"{i:032x}"
        shard = f"shard-{i % shards:06d}.tar"
        for member, kind, size in ((f"{rid}.jpg", "media", 1000 + i), (f"{rid}.json", "json", 200)):
            members.append(
                {
                    "shard": shard,
                    "member": member,
                    "kind": kind,
                    "sample": rid,
                    "subject": f"{i // 2:064x}",
                    "media_kind": "image",
                    "operator": "mask",
                    "size": size,
                    "sha256": f"{(i * 2 + (kind == 'json')):064x}",
                    **QUASI_VALUES[i % 2],
                    "_gate": {"passed": True, "residual_faces": 0, "frames_checked": 1},
                    "_minor": False,
                }
            )
    shard_meta = [
        {
            "name": f"shard-{j:06d}.tar",
            "size": 10_000,
            "sha256": f"{100 + j:064x}",
            "stored_sha256": f"{200 + j:064x}",
            "stored_size": 10_100,
        }
        for j in range(shards)
    ]
    return members, shard_meta


def _summary(samples: int = 7, shards: int = 1) -> dict[str, Any]:
    return {
        "release_id": "0" * 26,
        "name": "spring-2026",
        "created_at": "2026-12-02T08:00:00+00:00",
        "samples": samples,
        "subjects": 4,
        "shards": shards,
        "k_requested": 3,
        "k_achieved": 3,
        "suppressed": 2,
        "levels": {"age_band": 1, "region": 1, "device_family": 1, "capture_month": 1},
        "histogram": {"3": 1, "4": 1},
        "gate": {"passed": samples, "residual_faces": 0, "frames_checked": samples},
        "eligibility": {"considered": 12, "excluded_withdrawn": 1, "excluded_minor": 1},
        "minor_samples": 0,
        "operator": None,
        "generation": 0,
        "revoked_samples_removed": 0,
        "funnel": {
            "sampling": {
                "candidates": 60,
                "not_selected": 40,
                "no_consent": 5,
                "minor_without_guardian": 1,
                "withdrawn": 0,
                "erased": 0,
                "gate_discarded": {"residual_face": 3, "no_source_face": 2},
                "other": {},
                "sampled": 9,
            },
            "stored_samples": 12,
            "excluded": {"withdrawn": 1, "minor_without_guardian": 1},
            "suppressed_k_anonymity": 2,
            "released": samples,
        },
    }


def test_manifest_has_one_row_per_sample_with_every_field_filled() -> None:
    import pandas as pd
    import pyarrow.parquet as pq

    members, shards = _records()
    data = manifest_parquet(members, shards)
    table = pq.read_table(io.BytesIO(data))
    assert table.num_rows == 7  # samples, not the 14 tar members
    assert table.column_names == [c for c, _, _ in MANIFEST_SCHEMA]
    for column in table.columns:
        assert column.null_count == 0
    frame = pd.read_parquet(io.BytesIO(data))
    assert len(frame) == 7
    assert not frame.isna().any().any(), frame.isna().sum()
    assert frame["media_size"].dtype == "int64"
    assert set(frame["shard_stored_sha256"]) == {f"{200:064x}", f"{201:064x}"}
    assert frame.loc[frame["sample"] == f"{3:032x}", "json_member"].item() == f"{3:032x}.json"
    # pull and verify read it back as the members they check shards against
    back = read_manifest(data)
    want = {(m["shard"], m["member"], m["kind"], m["sha256"], m["size"]) for m in members}
    assert {(r["shard"], r["member"], r["kind"], r["sha256"], r["size"]) for r in back} == want
    assert all(r[a] for r in back for a in QUASI)


def test_manifest_reader_reads_the_older_per_member_layout() -> None:
    """Releases published before the per-sample manifest stay pullable."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    members, _ = _records(2, 1)
    cols = ("shard", "member", "kind", "sample", "subject", "size", "sha256")
    table = pa.Table.from_pylist([{c: m[c] for c in cols} for m in members])
    buf = io.BytesIO()
    pq.write_table(table, buf)
    rows = read_manifest(buf.getvalue())
    assert [(r["member"], r["kind"]) for r in rows] == [(m["member"], m["kind"]) for m in members]


def test_datasheet_is_prose_for_people() -> None:
    samples = [
        {"quasi": QUASI_VALUES[i % 2], "media_kind": "image", "operator": "mask"} for i in range(7)
    ]
    text = datasheet(_summary(shards=1), samples)
    assert "1 shard." in text and "1 shards" not in text
    assert "7 samples (7 images) of 4 people" in text
    assert "{" not in text and "}" not in text  # no dict repr
    assert re.search(r"\b1 [a-z]+s\b", text) is None, re.findall(r"\b1 [a-z]+s\b", text)
    assert "age: 20-year bands" in text and "capture date: quarter" in text
    assert "2 equivalence classes" in text
    # the loss funnel, in words
    assert "60 finished jobs" in text and "40 jobs were not drawn by the sampling rate" in text
    assert "5 de-identified derivatives failed the residual-face gate" in text
    assert "suppressed 2 samples" in text
    one = datasheet(_summary(samples=1, shards=1) | {"subjects": 1}, samples[:1])
    assert "1 sample (1 image) of 1 person" in one
    assert "1 job came from minors without" in text and "1 job were" not in text


def _thumbnails() -> list[str]:
    """Contact-sheet thumbnails (base64 JPEG, 192 px) of scikit-image images without people."""
    import cv2
    from skimage import data

    out = []
    for img in (data.coffee(), data.chelsea(), data.rocket(), data.immunohistochemistry()):
        bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        h, w = bgr.shape[:2]
        s = 192 / max(h, w)
        small = cv2.resize(bgr, (int(w * s), int(h * s)), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", small)
        assert ok
        out.append(base64.b64encode(bytes(buf)).decode())
    return out


def _chromium() -> str:
    """The Chromium binary; installed by `.ci/run` (Debian package ``chromium``)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is not installed: apt-get install chromium (see .ci/run)")
    return path


def _render(page: Path, shot: Path, profile: Path) -> list[str]:
    """Render ``page`` in headless Chromium to ``shot``; the console messages it logged."""
    run = subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1100,1900",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return [line for line in run.stderr.splitlines() if ":CONSOLE:" in line or "Uncaught" in line]


def _ink(shot: Path) -> tuple[float, int]:
    """(share of pixels that differ from the page background, distinct colours)."""
    import cv2
    import numpy as np

    img = cv2.imread(str(shot))
    assert img is not None
    background = np.median(img.reshape(-1, 3), axis=0)
    differs = np.abs(img.astype(np.int16) - background).sum(axis=2) > 30
    colours = len(np.unique((img // 16).reshape(-1, 3), axis=0))
    return float(differs.mean()), colours


def test_privacy_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    """The page renders, is not blank, logs nothing to the console and loads nothing from
    outside (its CSP would log any attempt); the control page shows the check sees errors."""
    html_text = privacy_report(_summary(), _thumbnails())
    assert "<svg" in html_text and html_text.count("<figure>") == 4
    assert "http://" not in html_text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    page = tmp_path / "privacy_report.html"
    page.write_text(html_text)
    shot = tmp_path / "report.png"
    console = _render(page, shot, tmp_path / "profile")
    assert console == []
    ink, colours = _ink(shot)
    assert ink > 0.05 and colours > 50, (ink, colours)

    control = tmp_path / "control.html"
    control.write_text(
        "<!doctype html><html><head><meta http-equiv='Content-Security-Policy' "
        "content=\"default-src 'none'\"></head><body><p>x</p>"
        "<script>console.error('boom')</script></body></html>"
    )
    blank = tmp_path / "blank.png"
    assert _render(control, blank, tmp_path / "profile2") != []
    assert _ink(blank)[0] < 0.01
