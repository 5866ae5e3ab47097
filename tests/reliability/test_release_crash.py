"""SIGKILL the whole worker while it builds a release's shards: a fresh worker finishes the build,
and the published release holds every eligible sample exactly once (RabbitMQ: the killed
worker's unacknowledged shard tasks come back when its connection drops)."""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.research.conftest import sample_images  # noqa: F401  (a fixture)
from tests.research.test_release import populate, researcher
from worker.research.release import ReleaseRequest
from worker.research.release.pull import pull, verify

pytestmark = [pytest.mark.reliability, pytest.mark.services]


def test_release_build_survives_a_killed_worker(
    make_settings: Any,
    pg_url: str,
    s3_endpoint: str,
    s3_bucket: str,
    amqp_url: str,
    sample_images: list[bytes],  # noqa: F811
    tmp_path: Path,
) -> None:
    from tests.conftest import REGION
    from tests.workers import celery_worker, wait_for
    from worker.bootstrap import Container

    settings: dict[str, object] = {
        "home": tmp_path / "var",
        "broker_url": amqp_url,
        "database_url": pg_url,
        "store_url": f"s3://{s3_bucket}/p",
        "s3_endpoint_url": s3_endpoint,
        "s3_region": REGION,
        "store_region": REGION,  # SeaweedFS has no regions: the operator names it
        "research__shard_samples": 1,
    }
    container = Container(
        make_settings(
            **{k: v for k, v in settings.items() if k != "research__shard_samples"},
            research={"shard_samples": 1},
        )
    )
    try:
        populate(container, sample_images, n_ok=10, tag="kill")
        log1 = tmp_path / "w1.log"
        with celery_worker(settings, log1, queues="research", concurrency=1) as proc:
            res = container.releases.create(ReleaseRequest(name="killed", k=2))
            assert res.shards == 11
            # kill the whole worker (its process group) once it is building, before the end
            assert wait_for(lambda: "release.shard_built" in log1.read_text(), 60), (
                log1.read_text()[-3000:]
            )
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        built_before = log1.read_text().count("release.shard_built")
        assert container.releases.result(res.release_id).status != "published", built_before
        log2 = tmp_path / "w2.log"
        with celery_worker(settings, log2, queues="research", concurrency=2):

            def published() -> bool:
                # published, and the finish that published it has dropped the shard part
                # records (the step after publishing; the worker is stopped right after this)
                return container.releases.result(res.release_id).status == "published" and not list(
                    container.store.keys(f"releases/{res.release_id}/parts/")
                )

            assert wait_for(published, 120), log2.read_text()[-3000:]
        # the new worker took over the build (the killed worker's log may have lost its last
        # lines to the SIGKILL, so its shard count is not compared)
        assert "facemedia.research.build_shard" in log2.read_text()
        final = container.releases.result(res.release_id)
        assert final.samples == 11 and final.shards == 11
        priv, pub = researcher(tmp_path, "dora")
        container.releases.grant(res.release_id, pub)
        out = tmp_path / "pulled"
        signer = container.releases.signing.public_pem()  # pinned: nothing is trusted on first use
        cfg = tmp_path / "researcher-config"
        got = pull(container.store, res.release_id, priv, out, signer=signer, config=cfg)
        assert got.samples == 11
        assert verify(out, signer=signer, config=cfg).samples == 11
        # every sample exactly once across the shards
        import tarfile

        names: Counter[str] = Counter()
        for shard in out.glob("shard-*.tar"):
            with tarfile.open(shard) as tar:
                names.update(m.name for m in tar if m.name.endswith(".json"))
        assert len(names) == 11 and set(names.values()) == {1}
        # no shard part record left behind in the store
        assert not list(container.store.keys(f"releases/{res.release_id}/parts/"))
    finally:
        container.close()
