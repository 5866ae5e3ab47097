"""The hostile-input corpus (tests/fixtures/hostile/build.py, generated on the fly).

Every case goes through the embedded spine (``detect`` for images, ``ar`` for videos) and must
end with its documented outcome and error code, its original deleted, no output left by a failed
job. A subset goes through a real ``celery worker``: the pool child never dies and its memory
stays bounded.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.hostile.build import Case, cases
from tests.reliability.checks import report
from tests.reliability.conftest import Worker, distributed_settings, purge_broker, rel_redis_url
from tests.workers import wait_for

pytestmark = pytest.mark.reliability


@pytest.fixture(scope="module")
def corpus() -> list[Case]:
    return cases()


def _verdict(case: Case, st: dict[str, Any]) -> str | None:
    """None when the job ended as documented, else what went wrong."""
    if st["status"] != case.status:
        return f"status {st['status']} ({st['error_code']}), expected {case.status}"
    if case.status == "failed" and st["error_code"] != case.error_code:
        return f"error_code {st['error_code']}, expected {case.error_code}"
    if case.status == "failed" and st["outputs"]:
        return f"a failed job left outputs {st['outputs']}"
    if case.status == "succeeded" and case.faces is not None and st["faces"] != case.faces:
        return f"faces {st['faces']}, expected {case.faces}"
    if not st["original_deleted"]:
        return "original not deleted"
    return None


def test_the_corpus_has_at_least_forty_kinds(corpus: list[Case]) -> None:
    assert len(corpus) >= 40
    assert len({c.name for c in corpus}) == len(corpus)
    assert {c.job_type for c in corpus} == {"detect", "ar", "pta"}


def test_every_hostile_input_ends_as_documented_in_the_embedded_spine(
    corpus: list[Case], embedded: Any
) -> None:
    bad: dict[str, str] = {}
    slowest = (0.0, "")
    for case in corpus:
        t = time.perf_counter()
        job_id = embedded.client.submit(
            case.data, case.job_type, case.params, subject_id="hostile-subject"
        )
        took = time.perf_counter() - t
        slowest = max(slowest, (took, case.name))
        problem = _verdict(case, embedded.service.status(job_id))
        if problem:
            bad[case.name] = problem
        if took > 20:
            bad[case.name] = f"took {took:.1f} s"
    assert bad == {}
    assert list(embedded.vault.store.keys("originals/")) == []
    failed = sum(c.status == "failed" for c in corpus)
    report(
        "hostile_embedded",
        cases=len(corpus),
        failed_as_documented=failed,
        succeeded=len(corpus) - failed,
        slowest_s=round(slowest[0], 2),
        slowest=slowest[1],
    )


def test_a_deep_progressive_jpeg_is_refused_before_decoding() -> None:
    """Regression: 1000 repeated scans in a 270 KB JPEG took 23 s to decode; now refused
    (too_large) from a walk of the markers; an ordinary progressive JPEG still decodes."""
    from PIL import Image

    from pipelines.errors import TooLarge
    from pipelines.media import decode_image
    from pipelines.media.image import ImageLimits, _jpeg_scans
    from tests.fixtures.hostile.build import _deep_progressive, _pil_bytes

    bomb = _deep_progressive(1000)
    t = time.perf_counter()
    with pytest.raises(TooLarge):
        decode_image(bomb, ImageLimits())
    assert time.perf_counter() - t < 2.0
    normal = _pil_bytes(Image.new("RGB", (64, 48), (9, 99, 199)), "JPEG", progressive=True)
    assert 2 <= _jpeg_scans(normal, 100) <= 12
    assert decode_image(normal, ImageLimits()).shape == (48, 64, 3)
    assert _jpeg_scans(bomb, 100) == 101  # counting stops past the limit


SUBSET = (
    "zero_bytes",
    "jpeg_truncated_half",
    "png_truncated_half",
    "png_bomb_ihdr_max",
    "png_zlib_bomb_100mp",
    "jpeg_bomb_sof_65500",
    "jpeg_deep_progressive_1000",
    "webp_bomb_16k",
    "svg_with_script",
    "pdf",
    "jpeg_zip_polyglot",
    "png_html_polyglot",
    "jpeg_cmyk",
    "png_16bit_rgb",
    "webp_animated",
    "jpeg_exif_orientation_6",
    "jpeg_giant_exif_4mb",
    "mp4_broken_moov",
    "mp4_no_frames",
    "mp4_8k",
    "mp4_over_long",
    "mp4_vfr",
    "mp4_rotated_90",
)


@pytest.mark.services
@pytest.mark.timeout(400)
def test_hostile_subset_through_a_real_worker_which_survives_with_bounded_memory(
    corpus: list[Case],
    pg_url: str,
    s3_bucket: str,
    s3_endpoint: str,
    tmp_path: Path,
) -> None:
    import psutil

    from tests.conftest import need, port_open
    from worker.bootstrap import Container
    from worker.settings import load_settings

    need("redis", port_open("127.0.0.1", 6379), "nothing listens on 127.0.0.1:6379")
    purge_broker(rel_redis_url())
    by_name = {c.name: c for c in corpus}
    subset = [by_name[n] for n in SUBSET]
    settings = distributed_settings(
        rel_redis_url(),
        pg_url,
        s3_bucket,
        s3_endpoint,
        tmp_path / "var",
        task_time_limit=60,
        task_soft_time_limit=50,
        visibility_timeout=90,
    )
    container = Container(load_settings(**settings))
    container.db.migrate()
    (tmp_path / "logs").mkdir()
    worker = Worker(settings, tmp_path / "logs", concurrency=1)
    peak = {"rss": 0}
    stop = threading.Event()
    try:
        worker.start()
        assert worker.wait_children()
        children = worker.children()

        def sample() -> None:
            while not stop.wait(0.05):
                for pid in worker.children():
                    with contextlib.suppress(psutil.NoSuchProcess):
                        peak["rss"] = max(peak["rss"], psutil.Process(pid).memory_info().rss)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        ids = {
            c.name: container.client.submit(c.data, c.job_type, c.params, subject_id="hostile")
            for c in subset
        }

        def ended() -> bool:
            return all(
                container.service.status(j)["status"] in ("succeeded", "failed")
                and container.service.status(j)["original_deleted"]
                for j in ids.values()
            )

        assert wait_for(ended, timeout=300, interval=0.5), worker.logs()[-3000:]
        assert worker.proc is not None and worker.proc.poll() is None  # the worker survived
        assert worker.children() == children  # ... and so did its pool child: no crash
        stop.set()
        sampler.join()
    finally:
        stop.set()
        worker.close()
    bad = {
        n: p
        for n, j in ids.items()
        if (p := _verdict(by_name[n], container.service.status(j))) is not None
    }
    assert bad == {}
    assert b"WorkerLostError" not in worker.logs()
    peak_mb = peak["rss"] / 2**20
    assert peak_mb < 1024, peak_mb
    report("hostile_worker", cases=len(subset), child_peak_rss_mb=round(peak_mb), child_restarts=0)
    container.close()
