"""Task ``facemedia.research.build_ksame_batches`` on the ``research`` queue (beat, every 5 min).

Contract: JSON args ``[]``, no kwargs; result (ignored by the broker): the batch reports. It
prunes the rows of staged faces and samples whose objects are gone, then builds k-Same batches
while at least k distinct subjects have claimable staged faces (``KSameBatcher.build``). Callable
inline: ``get_container().ksame.build()``.
"""

from __future__ import annotations

from typing import Any

from worker.celery_app import app
from worker.dispatch import handlers
from worker.dispatch.names import BUILD_KSAME


@app.task(name=BUILD_KSAME, ignore_result=True, acks_late=True)
def build_ksame_batches() -> list[dict[str, Any]]:
    """Build the k-Same batches that are due (bounded per task)."""
    from worker.bootstrap import get_container

    return handlers.build_ksame_batches(get_container())
