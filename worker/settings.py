"""One typed settings object for the whole worker.

Sources, highest precedence first: keyword overrides, ``FACEMEDIA_*`` environment variables
(``FACEMEDIA_RETENTION__OUTPUTS`` for a nested key), the TOML file named by ``FACEMEDIA_CONFIG``,
``config/default.toml``. Nothing is read at import time: call :func:`load_settings`.

The schema is the pydantic model :class:`Settings`; the sources are read here by a small loader
(tomllib and ``os.environ``) rather than pydantic-settings, which cost a CLI command ~60 ms to
import and could not refuse unknown variables. Refused at load, naming the closest setting and
never a value: an unknown ``FACEMEDIA_*`` variable (``FACEMEDIA_TEST_*`` is the test harness's),
an unknown key in a file, a ``FACEMEDIA_CONFIG`` naming a missing file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "default.toml"


class RetentionSettings(BaseModel):
    """Time to live per object class (``30m``, ``24h``, ``7d``, ``3y`` or ``until_revoked``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    originals: str = "24h"
    outputs: str = "7d"
    research: str = "3y"
    staging: str = "24h"
    releases: str = "until_revoked"
    audit: str = "10y"

    @field_validator("*")
    @classmethod
    def _valid(cls, value: str) -> str:
        from worker.retention.policy import parse_ttl

        try:
            parse_ttl(value)
        except ValueError:  # the parser's message quotes the value: never echo it
            raise ValueError(
                "not a duration (use e.g. 30m, 24h, 7d, 3y or until_revoked)"
            ) from None
        return value

    def ttl(self, object_class: str) -> timedelta | None:
        """The TTL of an object class; None means kept until revoked."""
        from worker.retention.policy import parse_ttl

        field = {"original": "originals", "output": "outputs", "release": "releases"}.get(
            object_class, object_class
        )
        return parse_ttl(str(getattr(self, field)))


class ResearchSettings(BaseModel):
    """Research sampling and dataset releases (see docs/PRIVACY.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    sample_rate: float = Field(default=0.1, ge=0.0, le=1.0)
    operator: str = "mask"
    k_same_k: int = Field(default=5, ge=2, le=64)
    release_k: int = Field(default=5, ge=1)
    shard_samples: int = Field(default=256, ge=1)


class ApiSettings(BaseModel):
    """The HTTP API (``facemedia serve``, docs/API.md). The upload limit is ``max_upload_bytes``."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    max_concurrent_uploads: int = Field(default=16, ge=1)
    request_timeout_s: float = Field(default=300.0, gt=0)
    rate_per_second: float = Field(default=20.0, gt=0)
    burst: int = Field(default=40, ge=1)
    callback_allow_hosts: list[str] = Field(default_factory=list)
    webhook_max_attempts: int = Field(default=8, ge=1, le=50)
    webhook_backoff_s: float = Field(default=30.0, gt=0)
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=60)

    @field_validator("callback_allow_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


class Settings(BaseModel):
    """Every knob of the worker; see config/default.toml for what each one means. Build it with
    :func:`load_settings` (which reads the files and the environment)."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        # A configuration error never echoes a value (a database URL may hold a password).
        hide_input_in_errors=True,
    )

    home: Path = Path("./var")
    broker_url: str = ""
    database_url: str = ""
    store_url: str = ""
    s3_endpoint_url: str = ""
    s3_region: str = "cn-north-1"
    store_region: str = ""  # declared region of a store that reports none (default.toml)
    allowed_regions: list[str] = Field(default_factory=lambda: ["cn-north-1", "cn-northwest-1"])
    keyring: str = "local"
    kms_endpoint_url: str = ""
    kms_epoch_keys: list[str] = Field(default_factory=list)
    erasure_epoch_delay: str = "1h"
    segment_size: int = Field(default=65536, ge=1024, le=16 * 1024 * 1024)
    max_upload_bytes: int = Field(default=200 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(default=40_000_000, gt=0)
    detector_threshold: float = Field(default=0.5, gt=0, lt=1)
    detector_working_size: int = Field(default=640, ge=128)
    max_video_seconds: float = Field(default=60.0, gt=0)
    max_video_side: int = Field(default=1920, ge=16)
    max_video_short_side: int = Field(default=1080, ge=16)
    detect_every: int = Field(default=5, ge=1)
    # RLIMIT_DATA of a process that decodes (prefork child, inline run), MiB; 0 = no ceiling.
    decode_memory_limit_mb: int = Field(default=3072, ge=0)
    task_time_limit: int = Field(default=300, gt=0)
    task_soft_time_limit: int = Field(default=270, gt=0)
    visibility_timeout: int = Field(default=900, gt=0)
    redis_restore_interval: int = Field(default=5, ge=1)
    amqp_quorum_queues: bool = True
    amqp_delivery_limit: int = Field(default=20, ge=1)
    lease_seconds: int = Field(default=15, ge=3)
    rescue_interval: float = Field(default=10.0, gt=0)
    # beat's 5-minute entries (sweep, webhook rescue, ...), and the embedded server's
    schedule_interval: float = Field(default=300.0, ge=1.0)
    max_retries: int = Field(default=6, ge=0)
    retry_backoff_seconds: float = Field(default=2.0, ge=0)
    max_deliveries: int = Field(default=5, ge=1)
    retention: RetentionSettings = Field(default_factory=lambda: RetentionSettings())
    research: ResearchSettings = Field(default_factory=lambda: ResearchSettings())
    api: ApiSettings = Field(default_factory=lambda: ApiSettings())
    sweep_batch: int = Field(default=1000, ge=1, le=1000)
    sweep_lock_seconds: int = Field(default=600, ge=10)
    orphan_grace: str = "24h"
    delete_verify: Literal["listing", "confirmations"] = "listing"
    log_level: str = "INFO"
    metrics_port: int = Field(default=0, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    soft_shutdown_seconds: float = Field(default=60.0, ge=0)
    # Not in default.toml on purpose: the path of an extra TOML file (read by load_settings).
    config: str = ""

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_environment(cls, data: Any) -> Any:
        problems = misspelled_environment(os.environ)
        if problems:
            raise ValueError("; ".join(problems))
        return data

    @field_validator("erasure_epoch_delay")
    @classmethod
    def _valid_epoch_delay(cls, value: str) -> str:
        from worker.retention.policy import parse_ttl

        if parse_ttl(value) is None:
            raise ValueError("erasure_epoch_delay must be a duration such as 15m or 1h")
        return value

    @field_validator("allowed_regions", "kms_epoch_keys", mode="before")
    @classmethod
    def _split_regions(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("task_soft_time_limit")
    @classmethod
    def _soft_below_hard(cls, value: int, info: Any) -> int:
        hard = info.data.get("task_time_limit")
        if hard is not None and value >= hard:
            raise ValueError("task_soft_time_limit must be below task_time_limit")
        return value

    @field_validator("visibility_timeout")
    @classmethod
    def _visibility_above_limit(cls, value: int, info: Any) -> int:
        hard = info.data.get("task_time_limit")
        if hard is not None and value <= hard:
            raise ValueError(
                "visibility_timeout must exceed task_time_limit, or a long task runs twice"
            )
        return value

    # ----- derived values -------------------------------------------------------------------

    @property
    def home_dir(self) -> Path:
        """The embedded state directory, absolute."""
        return self.home.expanduser().resolve()

    @property
    def effective_database_url(self) -> str:
        """The ledger URL; SQLite under ``home`` when unset."""
        return self.database_url or f"sqlite:///{self.home_dir / 'ledger.db'}"

    @property
    def effective_store_url(self) -> str:
        """The store URL; a directory under ``home`` when unset."""
        return self.store_url or f"file://{self.home_dir / 'store'}"

    @property
    def epoch_delay(self) -> timedelta:
        """The longest time from an erasure to the KEK epoch change that completes it."""
        from worker.retention.policy import parse_ttl

        delay = parse_ttl(self.erasure_epoch_delay)
        assert delay is not None  # checked by the validator
        return delay

    @property
    def eager(self) -> bool:
        """True when no broker is configured: tasks run in-process."""
        return not self.broker_url

    @property
    def store_scheme(self) -> str:
        """``file`` or ``s3``."""
        return urlparse(self.effective_store_url).scheme


# FACEMEDIA_TEST_* belongs to the test harness (long runs, service restarts, reports).
_NOT_SETTINGS_PREFIXES = ("TEST_",)
_ENV_PREFIX = "FACEMEDIA_"


class SettingsError(ValueError):
    """A configuration source that cannot be read: ``FACEMEDIA_CONFIG`` naming a missing file,
    a TOML file that does not parse. The message names the source, never a value."""

    code = "invalid_settings"


def _nested_models() -> dict[str, type[BaseModel]]:
    return {"retention": RetentionSettings, "research": ResearchSettings, "api": ApiSettings}


def _close(name: str, choices: list[str]) -> str | None:
    import difflib

    found = difflib.get_close_matches(name, choices, n=1, cutoff=0.75)
    return found[0] if found else None


def misspelled_environment(environ: Mapping[str, str]) -> list[str]:
    """``FACEMEDIA_*`` variables that name no setting, each with the closest one when there is
    one: a typo (``FACEMEDIA_DATABSE_URL``) would otherwise quietly fall back to the default.
    ``FACEMEDIA_TEST_*`` is left to the test harness. Values are never read into the message."""
    fields = sorted(Settings.model_fields)
    problems: list[str] = []
    for raw in sorted(environ):
        if not raw.upper().startswith(_ENV_PREFIX):
            continue
        name = raw[len(_ENV_PREFIX) :].lower()
        if name.upper().startswith(_NOT_SETTINGS_PREFIXES):
            continue
        top, sep, sub = name.partition("__")
        if top in fields:
            continue  # a nested key under a real section is checked by the section's model
        guess = _close(top, fields)
        line = f"unknown setting {raw.upper()}"
        if guess is None:
            problems.append(line + " (see config/default.toml for every setting)")
            continue
        fix = _ENV_PREFIX + guess.upper() + (sep + sub.upper() if sep else "")
        problems.append(f"{line}; did you mean {fix}?")
    return problems


def _label(loc: tuple[str, ...], environ: Mapping[str, str]) -> str:
    """``FACEMEDIA_X__Y`` if that variable is set, else the dotted TOML key ``x.y``."""
    env_name = _ENV_PREFIX + "__".join(loc).upper()
    if any(key.upper() == env_name for key in environ):
        return env_name
    return ".".join(loc)


def describe_settings_error(exc: Exception, environ: Mapping[str, str] | None = None) -> list[str]:
    """One line per problem: the setting's name and the fix, never the value that was given.

    For an unknown key (environment variable, TOML file or nested section) the line names the key
    and, when one is close, the setting that was probably meant.
    """
    if isinstance(exc, SettingsError):
        return [str(exc)]
    if not isinstance(exc, ValidationError):
        return [type(exc).__name__]
    env = os.environ if environ is None else environ
    lines: list[str] = []
    for error in exc.errors(include_url=False, include_context=False):
        loc = tuple(str(part) for part in error["loc"])
        given = error.get("input")
        msg = str(error["msg"]).removeprefix("Value error, ")
        custom = error["type"] in ("value_error", "assertion_error")
        if custom and isinstance(given, str) and given and given in msg:
            msg = msg.replace(given, "<hidden>")
        if error["type"] == "extra_forbidden" and loc:
            section: type[BaseModel] = Settings
            if len(loc) > 1 and loc[0] in _nested_models():
                section = _nested_models()[loc[0]]
            guess = _close(loc[-1].lower(), sorted(section.model_fields))
            label = _label(loc, env)
            meant = (*loc[:-1], guess or "")
            fix = (
                ".".join(meant)
                if label == ".".join(loc)
                else _ENV_PREFIX + "__".join(meant).upper()
            )
            line = f"unknown setting {label}"
            if label == ".".join(loc):
                line += " in the configuration file"
            if guess is not None:
                line += f"; did you mean {fix}?"
            else:
                line += " (see config/default.toml for every setting)"
            lines.append(line)
        elif not loc:
            lines.append(msg)
        else:
            lines.append(f"setting {_label(loc, env)}: {msg}")
    return lines


SETTINGS_ERRORS: tuple[type[Exception], ...] = (ValidationError, SettingsError)
"""What :func:`load_settings` raises for a bad configuration (catch these, describe them with
:func:`describe_settings_error`)."""


def _read_toml(path: Path, what: str) -> dict[str, Any]:
    import tomllib

    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise SettingsError(f"{what} names a file that does not exist") from None
    except OSError as exc:
        raise SettingsError(f"{what}: the file cannot be read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:  # its message names a line and column, not a value
        raise SettingsError(f"{what}: the file is not valid TOML ({exc})") from None


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``; tables (dicts) merge key by key."""
    merged = dict(base)
    for key, value in top.items():
        below = merged.get(key)
        if isinstance(value, Mapping) and isinstance(below, dict):
            merged[key] = _merge(below, value)
        else:
            merged[key] = value
    return merged


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """``FACEMEDIA_X`` → ``{"x": ...}``, ``FACEMEDIA_X__Y`` → ``{"x": {"y": ...}}`` (values
    are strings: the model converts them). Unknown names are refused by the model's check."""
    found: dict[str, Any] = {}
    for raw, value in environ.items():
        upper = raw.upper()
        if not upper.startswith(_ENV_PREFIX) or upper[len(_ENV_PREFIX) :].startswith(
            _NOT_SETTINGS_PREFIXES
        ):
            continue
        path = upper[len(_ENV_PREFIX) :].lower().split("__")
        if path[0] not in Settings.model_fields:
            continue
        node = found
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node[path[-1]] = value
    return found


def load_settings(**overrides: Any) -> Settings:
    """Read the settings from their sources now; ``overrides`` win over everything.

    Raises one of :data:`SETTINGS_ERRORS` for a bad configuration."""
    data = _read_toml(DEFAULT_CONFIG, "config/default.toml") if DEFAULT_CONFIG.exists() else {}
    extra = os.environ.get("FACEMEDIA_CONFIG", "")
    if extra:
        data = _merge(data, _read_toml(Path(extra), "FACEMEDIA_CONFIG"))
    data = _merge(data, _from_environment(os.environ))
    return Settings.model_validate(_merge(data, overrides))
