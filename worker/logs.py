"""structlog JSON logs: event names and ids only; a filter drops anything personal.

Only allow-listed keys survive; values are scrubbed of anything shaped like an IP address, an
e-mail, a phone number or a media file name. Free text belongs in the event name, never in values.

structlog is not imported here: importing it loads ``structlog.dev``, which brings rich's
traceback and pretty-printer, attrs and pygments (~12 % of a CLI command's start-up). A
command whose code never imports structlog (``facemedia status``, ``crypto encrypt``) never
loads it; when something does import it later, it is configured the moment its import ends,
before any logger can write (:func:`configure_logging`).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import re
import sys
from collections.abc import MutableMapping, Sequence
from types import ModuleType
from typing import Any

ALLOWED_KEYS = frozenset(
    {
        "event",
        "level",
        "timestamp",
        "logger",
        "job_id",
        "job_type",
        "object_id",
        "object_class",
        "status",
        "error_code",
        "delivery",
        "attempt",
        "outputs",
        "faces",
        "versions",
        "reason",
        "count",
        "duration_ms",
        "queue",
        "release_id",
        "sample_id",
        "exception",
        "exc_type",
    }
)
REDACTED = "[redacted]"
# Keys whose values the logger itself produces; never scrubbed.
_OWN_KEYS = frozenset({"timestamp", "level", "logger"})
_ID = re.compile(r"^[0-9a-f]{32}$")
_PERSONAL = re.compile(
    r"(\b\d{1,3}(\.\d{1,3}){3}\b"  # IPv4
    r"|\b([0-9a-f]{1,4}:){3,7}[0-9a-f]{1,4}\b|\b[0-9a-f]{1,4}::[0-9a-f:]*"  # IPv6
    r"|[\w.+-]+@[\w-]+\.[\w.]+"  # e-mail
    r"|\+\d[\d\s-]{7,}\d|\b\d{11,}\b"  # phone numbers
    r"|[^\s/\\]+\.(jpe?g|png|webp|heic|heif|gif|mp4|mov|webm|avi|mkv)\b)",  # media file names
    re.IGNORECASE,
)


def scrub_value(value: Any) -> Any:
    """Redact personal-looking substrings of strings; other scalars pass."""
    if isinstance(value, str):
        return _PERSONAL.sub(REDACTED, value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    return scrub_value(str(value))


def drop_personal(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: keep allow-listed keys only, scrub their values."""
    for key in list(event_dict):
        value = event_dict[key]
        if key not in ALLOWED_KEYS:
            del event_dict[key]
        elif key in _OWN_KEYS:
            continue
        elif key.endswith("_id"):
            event_dict[key] = value if isinstance(value, str) and _ID.match(value) else REDACTED
        else:
            event_dict[key] = scrub_value(value)
    return event_dict


class _ScrubFilter(logging.Filter):
    """The same scrubbing for stdlib log records (Celery, boto, SQLAlchemy)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = scrub_value(record.getMessage())
        record.args = None
        return True


class _CurrentStderr:
    """Writes to the process's real stderr (fd 2), whatever ``sys.stderr`` was swapped for
    (Celery redirects it into its own logger)."""

    def write(self, text: str) -> int:
        stream = sys.__stderr__ or sys.stderr
        return stream.write(text)

    def flush(self) -> None:
        (sys.__stderr__ or sys.stderr).flush()


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stderr, at ``level``; idempotent. structlog is configured now if it is
    loaded, else as soon as something imports it."""
    handler = logging.StreamHandler(_CurrentStderr())
    handler.addFilter(_ScrubFilter())
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for noisy in ("botocore", "boto3", "s3transfer", "urllib3", "alembic", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if "structlog" in sys.modules:
        _configure_structlog(level)
        return
    for finder in sys.meta_path:
        if isinstance(finder, _ConfigureOnImport):
            finder.level = level
            return
    sys.meta_path.insert(0, _ConfigureOnImport(level))


def _configure_structlog(level: str) -> None:
    import structlog

    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            drop_personal,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )


class _ConfigureOnImport(importlib.abc.MetaPathFinder):
    """Finds ``structlog`` once (then leaves ``sys.meta_path``) and hands back its spec with a
    loader that configures it as soon as the package has executed."""

    def __init__(self, level: str) -> None:
        self.level = level

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        """The real spec of ``structlog`` with :class:`_ConfiguringLoader`; None otherwise."""
        if fullname != "structlog":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _ConfiguringLoader(spec.loader, self.level)
        return spec


class _ConfiguringLoader(importlib.abc.Loader):
    """structlog's own loader, then :func:`_configure_structlog`."""

    def __init__(self, inner: importlib.abc.Loader, level: str) -> None:
        self._inner = inner
        self._level = level

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        """What structlog's loader creates."""
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        """Run structlog's ``__init__``, then configure it."""
        self._inner.exec_module(module)
        _configure_structlog(self._level)

    def __getattr__(self, name: str) -> Any:  # resource readers, get_filename, ...
        return getattr(self._inner, name)
