"""Built-in job types; importing this package registers each of them."""

from worker.jobs.types import ar, detect, pta

__all__ = ["ar", "detect", "pta"]
