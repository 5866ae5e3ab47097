"""The harness's own scanners: a file scan must not flag another process's file for sharing
format boilerplate with an input (it failed a kill test once: a concurrent research test's
plaintext MP4 shard matched the first 32 bytes of the kill test's video)."""

from __future__ import annotations

import io

import pytest

from tests.media_signatures import plaintext_hits
from tests.reliability.checks import distinctive

pytestmark = pytest.mark.reliability


def _x264(frames: list[object], size: int) -> bytes:
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, "rgb24")))
        container.mux(stream.encode())
    return buf.getvalue()


def test_a_foreign_mp4_shares_boilerplate_but_not_the_distinctive_middle() -> None:
    import numpy as np

    rng = np.random.default_rng(8)
    ours = _x264([rng.integers(0, 255, (128, 128, 3), np.uint8) for _ in range(12)], 128)
    foreign = _x264([np.full((64, 64, 3), i * 30, np.uint8) for i in range(6)], 64)
    inputs = [h for h in plaintext_hits(foreign, [ours]) if h.startswith("input")]
    assert inputs, "the premise: a whole-input scan flags any x264 MP4"
    assert [h for h in plaintext_hits(foreign, [distinctive(ours)]) if h.startswith("input")] == []
    leaked = b"tmpfile" + ours + b"trailer"  # a real plaintext copy is still caught
    assert [h for h in plaintext_hits(leaked, [distinctive(ours)]) if h.startswith("input")]


def test_delivery_times_reads_the_workers_json_lines() -> None:
    from datetime import UTC, datetime

    from tests.reliability.checks import delivery_times

    log = (
        b"[2026-11-29 05:00:00,000: INFO/MainProcess] Task facemedia.media.process[x] received\n"
        b'{"job_id": "j1", "event": "job.leased_elsewhere", "timestamp": "2026-11-29T05:00:01.5"}'
        b"\n"
        b'{"job_id": "j1", "event": "job.claimed", "timestamp": "2026-11-29T05:00:05Z"}\n'
        b'{"job_id": "j2", "event": "job.pipeline_done", "timestamp": "2026-11-29T05:00:06Z"}\n'
        b"{not json\n"
    )
    got = delivery_times(log)
    assert set(got) == {"j1"}
    assert got["j1"] == [
        datetime(2026, 11, 29, 5, 0, 1, 500000, tzinfo=UTC),
        datetime(2026, 11, 29, 5, 0, 5, tzinfo=UTC),
    ]
