"""Built-in job types; importing this package registers each of them."""

from worker.jobs.types import detect

__all__ = ["detect"]
