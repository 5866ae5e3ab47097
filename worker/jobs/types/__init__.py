"""Built-in job types; importing this package registers each of them."""

from worker.jobs.types import ar, deid, detect, pta

__all__ = ["ar", "deid", "detect", "pta"]
